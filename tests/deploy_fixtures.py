"""Tiny trained runs shared by the deployment tests (serve, ONNX, GGUF, inference settings).

conftest.py loads this module as a plugin, so every test module sees the fixtures and each is built once per test
session, in a few seconds, from the tiny random models of conftest.py. (Importing a fixture into a test module
instead would register it again there, and rebuild it once per module.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli, write_data

SENTENCES = ["a great and moving film", "dull , slow and far too long", "the best thing this year",
             "an awful mess", "warm , funny and wise", "nothing works here"] * 4
QA_CONTEXT = "The Denver Broncos defeated the Carolina Panthers to win Super Bowl 50 in Santa Clara ."
CHAT = [{"role": "user", "content": "what colour is the sky ?"}, {"role": "assistant", "content": "blue"},
        {"role": "user", "content": "and the cat ?"}, {"role": "assistant", "content": "the cat sat on the mat"}]


def _train(folder: Path, *overrides: str) -> Path:
    run_cli("train", *overrides, "trainer.max_steps=3", "trainer.batch_size=8", "logger.console=none",
            "trainer.cache_features=false", f"run_dir={folder / 'run'}")
    return folder / "run"


@pytest.fixture(scope="session")
def ner_run(tmp_path_factory, tiny_model_dir, tiny_ner_data) -> Path:
    """NER trained at task.max_length=64 (not the YAML's 128), eval batch size 16."""
    return _train(tmp_path_factory.mktemp("ner"), f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
                  f"task.data.train={tiny_ner_data['train']}", f"task.data.validation={tiny_ner_data['validation']}",
                  "task.max_length=64", "trainer.eval_batch_size=16", "optimizer.lr=1e-3")


@pytest.fixture(scope="session")
def classification_run(tmp_path_factory, tiny_model_dir) -> Path:
    folder = tmp_path_factory.mktemp("classification")
    data = write_data(folder / "data.jsonl", [{"text": s, "label": "pos" if i % 2 == 0 else "neg"}
                                              for i, s in enumerate(SENTENCES)])
    return _train(folder, "task=classification", f"task.data.train={data}", f"task.data.validation={data}",
                  f"model.name_or_path={tiny_model_dir}", "model.name=tiny", "optimizer.lr=1e-3")


@pytest.fixture(scope="session")
def qa_run(tmp_path_factory, tiny_model_dir) -> Path:
    folder = tmp_path_factory.mktemp("qa")
    answers = [("Denver Broncos", "Who won?"), ("Santa Clara", "Where?"), ("Super Bowl 50", "Which game?")]
    rows = [{"id": str(i), "question": q, "context": QA_CONTEXT,
             "answers": [{"text": a, "answer_start": QA_CONTEXT.index(a)}]} for i, (a, q) in enumerate(answers * 4)]
    data = write_data(folder / "data.jsonl", rows)
    return _train(folder, "task=qa", f"task.data.train={data}", f"task.data.validation={data}",
                  f"model.name_or_path={tiny_model_dir}", "model.name=tiny", "task.max_length=64",
                  "task.doc_stride=16")


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, tiny_llama_dir) -> Path:
    folder = tmp_path_factory.mktemp("sft")
    data = write_data(folder / "chat.jsonl", [{"messages": CHAT}, {"prompt": "hello", "response": "fine , thank you"}] * 4)
    return _train(folder, "task=sft", f"task.data.train={data}", f"task.data.validation={data}",
                  "task.generation.max_new_tokens=6", "task.max_length=256", f"model.name_or_path={tiny_llama_dir}",
                  "model.name=tiny",
                  "optimizer.lr=1e-3")
