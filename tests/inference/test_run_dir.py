"""RunDir: the one reader of a run directory (config, results, metrics, overrides, best/, checkpoints, versions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftune.errors import FtuneError
from ftune.run_dir import RunDir


@pytest.fixture
def run(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text("task:\n  name: ner\nmodel:\n  name_or_path: tiny\n  quantization: null\n")
    (tmp_path / "results.json").write_text(json.dumps({"main_metric": "f1", "validation": {"f1": 0.5},
                                                       "versions": {"ftune": "0.0", "packages": {}}}))
    rows = [{"event": "train", "step": 1, "loss": 2.0}, {"event": "eval", "step": 2, "val/f1": 0.5}]
    # a killed run's last line may be cut mid-write
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"event": "tra')
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- task=ner\n- optimizer.lr=0.001\n")
    for step in (10, 2, 100):
        (tmp_path / "checkpoints" / f"step-{step}").mkdir(parents=True)
    (tmp_path / "best").mkdir()
    (tmp_path / "eval_test.json").write_text(json.dumps({"f1": 0.25}))
    return tmp_path


def test_reads_every_file_of_a_run(run):
    found = RunDir(run)
    assert found.is_run and str(found) == str(run) and found.best == run / "best"
    assert found.config().task.name == "ner" and found.config_dict()["model"]["name_or_path"] == "tiny"
    assert found.setting("model.name_or_path") == "tiny" and found.setting("model.quantization", "x") is None
    assert found.results()["validation"] == {"f1": 0.5} and found.versions() == {"ftune": "0.0", "packages": {}}
    assert [r["step"] for r in found.metrics()] == [1, 2]  # the cut line is skipped
    assert found.overrides() == ["task=ner", "optimizer.lr=0.001"] and found.has_overrides
    assert [p.name for p in found.checkpoints()] == ["step-2", "step-10", "step-100"]
    assert found.eval_results("test") == {"f1": 0.25} and found.eval_results("validation") == {}


def test_config_is_a_copy_callers_may_change(run):
    found = RunDir(run)
    found.config().task.name = "changed"
    assert found.config().task.name == "ner"


def test_an_unfinished_or_empty_folder_reads_as_empty(tmp_path):
    empty = RunDir(tmp_path)
    assert not empty.is_run and not empty.has_metrics and not empty.has_overrides
    assert empty.results() == {} and empty.metrics() == [] and empty.overrides() == [] and empty.checkpoints() == []
    assert empty.config_dict() == {} and empty.setting("model.name_or_path", "d") == "d" and empty.versions() is None
    with pytest.raises(FtuneError, match="not an ftune run") as raised:
        empty.config()
    assert raised.value.where == "run_dir" and raised.value.fix  # one line: what, where, how to fix (exit 2)


def test_of_keeps_none_and_a_run_dir():
    assert RunDir.of(None) is None
    found = RunDir("x")
    assert RunDir.of(found) is found and RunDir.of("x").path == Path("x")
