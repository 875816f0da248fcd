"""docs/extending.md's worked example runs as written: its module and YAML are taken from the page, made
discoverable the out-of-tree way ($FTUNE_PLUGINS and Hydra's search path), and the task trains two steps."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from ftune import registry
from tests.conftest import cli_exit_code, run_cli

DOC = Path(__file__).parents[2] / "docs" / "extending.md"
TEXTS = ["a b", "one two three four five six", "hello there", "this text has many more words than four", "ok",
         "yes no maybe so and then"] * 4


def files_of(doc: str) -> dict[str, str]:
    """The fenced blocks whose info string names a file: ```python file=<path>."""
    return {path: body for _, path, body in re.findall(r"```(\w+) file=(\S+)\n(.*?)```", doc, re.S)}


@pytest.fixture
def example(tmp_path, monkeypatch) -> Path:
    for path, body in files_of(DOC.read_text()).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.PLUGINS_ENV, "text_length_task")
    # the example's registration ends with the test: later tests walk the built-in tasks only
    monkeypatch.setattr(registry.TASKS, "_entries", dict(registry.TASKS._entries))
    monkeypatch.setattr(registry, "_out_of_tree", set(registry._out_of_tree))
    yield tmp_path
    sys.modules.pop("text_length_task", None)


def test_the_page_holds_the_module_and_the_yaml():
    assert set(files_of(DOC.read_text())) == {"text_length_task.py", "configs/task/text_length.yaml"}


def test_the_worked_example_trains(example, tiny_model_dir, capsys):
    data = example / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    search = f"hydra.searchpath=[file://{example / 'configs'}]"
    common = [search, "task=text_length", f"task.data.train={data}", f"model.name_or_path={tiny_model_dir}",
              "model.name=tiny", "trainer.max_steps=2", "trainer.batch_size=8", "logger.console=none"]
    # its schema's bound, and its own start-up check: one line, exit 2
    assert cli_exit_code("train", *common, "task.max_words=0", f"run_dir={example / 'bad'}") == 2
    assert cli_exit_code("train", *common, "task.max_words=40", f"run_dir={example / 'bad'}") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "task.max_words" in line]
    assert len(errors) == 2, errors

    run_dir = example / "run"
    run_cli("train", *common, f"task.data.validation={data}", f"run_dir={run_dir}")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["task"] == "text_length" and results["steps"] == 2
    assert set(json.loads((run_dir / "best" / "config.json").read_text())["id2label"].values()) == {"long", "short"}
