"""The gpu tier (`pytest -m gpu`, run by scripts/gpu_check.sh on a GPU machine; docs/gpu.md).

Every test marked `gpu` is skipped, with the reason, where CUDA is absent: `make test` collects them and
skips them before any fixture runs, so CI is unchanged. Helpers shared by the tier's modules live here too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# cuBLAS is deterministic only with a fixed workspace, which must be set before CUDA starts in this process
# (the resume comparisons below run with torch.use_deterministic_algorithms)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

NO_CUDA = "no CUDA GPU here: the gpu tier runs on a GPU machine (scripts/gpu_check.sh, docs/gpu.md)"


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def record(name: str, value) -> None:
    """A figure measured by a test (memory, seconds), collected by scripts/gpu_check.sh into its summary
    (FTUNE_GPU_FACTS: a JSON-lines file); printed too, for a plain `pytest -m gpu -s`."""
    print(f"[gpu fact] {name} = {value}")
    path = os.environ.get("FTUNE_GPU_FACTS")
    if path:
        with open(path, "a") as facts:
            facts.write(json.dumps({"name": name, "value": value}) + "\n")


def source_env() -> dict[str, str]:
    """The environment for a subprocess (torchrun, ftune serve/chat) that must import this same ftune:
    the folder ftune was imported from goes first on PYTHONPATH, the rest (gpu_check.sh's wheels and
    source-tree shim) follows."""
    import ftune

    root = str(Path(ftune.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def train_events(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row.get("event") == "train"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


CHAT = [{"role": "user", "content": "what colour is the sky ?"}, {"role": "assistant", "content": "the sky is blue"},
        {"role": "user", "content": "and the cat ?"}, {"role": "assistant", "content": "the cat sat on the mat"}]


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("gpu-chat") / "chat.jsonl",
                       [{"messages": CHAT}, {"prompt": "hello", "response": "fine , thank you"}] * 8)


@pytest.fixture(scope="session")
def ner_overrides(tiny_model_dir, tiny_ner_data) -> list[str]:
    """The tiny BERT on the small NER files, on the GPU (trainer.device=cuda: a silent CPU fallback fails)."""
    return [f"model.name_or_path={tiny_model_dir}", "model.name=tiny", "task=ner",
            f"task.data.train={tiny_ner_data['train']}", f"task.data.validation={tiny_ner_data['validation']}",
            f"task.data.test={tiny_ner_data['test']}", "trainer.epochs=2", "trainer.batch_size=16",
            "trainer.eval_batch_size=32", "optimizer.lr=1e-3", "trainer.log_every=1", "trainer.device=cuda",
            "logger.console=none"]


@pytest.fixture(scope="session")
def sft_overrides(tiny_llama_dir, chat_file) -> list[str]:
    """The tiny Llama on a small chat file, on the GPU."""
    return ["task=sft", f"task.data.train={chat_file}", f"task.data.validation={chat_file}", "task.max_length=128",
            f"model.name_or_path={tiny_llama_dir}", "model.name=tiny", "trainer.max_steps=8", "trainer.batch_size=4",
            "trainer.eval_batch_size=8", "optimizer.lr=1e-3", "trainer.log_every=1", "trainer.device=cuda",
            "task.generation.max_new_tokens=6", "logger.console=none"]


@pytest.fixture
def deterministic():
    """Deterministic CUDA kernels (warnings, not errors, where an op has none) for exact comparisons; the
    attention of the math kernel (the fused ones' backward may accumulate in any order)."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    fused = [kind for kind in ("flash", "mem_efficient", "cudnn")
             if getattr(torch.backends.cuda, f"{kind}_sdp_enabled", lambda: False)()]
    for kind in fused:
        getattr(torch.backends.cuda, f"enable_{kind}_sdp")(False)
    yield
    for kind in fused:
        getattr(torch.backends.cuda, f"enable_{kind}_sdp")(True)
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def train(compose_config):
    """train(overrides) → results of `ftune train` in-process (the config composed as the CLI does)."""
    from ftune.commands import train as command

    return lambda overrides: command.run(compose_config("train", overrides))
