"""Constraints between settings (ftune/config/constraints.py, and DPO's own in ftune/tasks/dpo.py).

Errors: the real command line, exit 2, one `ftune: error:` line, nothing written but the log. Warnings: one
line each, from the module itself (and one through a real run); the shipped defaults raise none."""

import json
import logging

import pytest
from omegaconf import OmegaConf

from ftune.config import constraints
from ftune.errors import FtuneError
from tests.conftest import cli_exit_code


def _refused(args: list[str], expected: str, run_dir, capsys) -> None:
    code = cli_exit_code("train", *args, f"run_dir={run_dir}", "logger.console=none")
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("ftune: error:")]
    assert code == 2, err
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err
    if run_dir.exists():  # at most the log: no config, checkpoint, model or results
        assert sorted(p.name for p in run_dir.iterdir()) in ([], ["train.log"]), list(run_dir.iterdir())


def test_stride_as_long_as_max_length_is_refused(tmp_path, tiny_model_dir, tiny_ner_data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused([f"model.name_or_path={tiny_model_dir}", "task=ner", f"task.data.train={tiny_ner_data['train']}",
              "task.max_length=64", "task.stride=64"],
             "task.stride: 64 tokens of context on each side do not fit windows of task.max_length=64", tmp_path / "run",
             capsys)


def test_stride_beyond_a_quarter_of_max_length_warns_that_it_is_cut(warnings):
    constraints.check(_cfg({"max_length": 64, "stride": 17}))
    assert warnings() == ["task.stride=17 is cut to 16: windows of task.max_length=64 keep at most a quarter as "
                          "context on each side"]


def test_warmup_longer_than_the_run_is_refused(tmp_path, tiny_model_dir, tiny_ner_data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 96 sentences, batch 16, 1 epoch: 6 steps
    _refused([f"model.name_or_path={tiny_model_dir}", "task=ner", f"task.data.train={tiny_ner_data['train']}",
              "trainer.epochs=1", "trainer.batch_size=16", "scheduler.warmup_steps=6"],
             "scheduler.warmup_steps: 6 warm-up steps do not fit a run of 6 steps", tmp_path / "run", capsys)


@pytest.mark.parametrize("loss", ["simpo", "ipo", "orpo"])
def test_label_smoothing_with_a_loss_that_ignores_it_is_refused(loss, tmp_path, tiny_llama_dir, capsys, monkeypatch):
    """TRL as the oracle: its DPO ipo loss and ORPO have no label smoothing; ftune's simpo has none either
    (TRL's CPO simpo smooths: applying it here would be a change of preference_losses.py)."""
    monkeypatch.chdir(tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "2 + 2?", "chosen": "4", "rejected": "5"}) + "\n")
    _refused([f"model.name_or_path={tiny_llama_dir}", "task=dpo", f"task.data.train={pairs}", "task.max_length=128",
              f"task.loss={loss}", "task.label_smoothing=0.1"],
             f"task.label_smoothing: task.loss={loss} does not use label smoothing, got 0.1", tmp_path / "run", capsys)


def _cfg(task: dict, trainer: dict | None = None, warmup: int = 0):
    return OmegaConf.create({"task": task, "scheduler": {"warmup_steps": warmup, "warmup_ratio": 0.1},
                             "trainer": {"batch_size": 32, "grad_accum": 1, "eval_every": None, "save_every": None,
                                         **(trainer or {})}})


@pytest.fixture
def warnings(caplog):
    logger = logging.getLogger("ftune")  # Hydra's logging config stops it propagating to pytest's handler
    logger.addHandler(caplog.handler)
    yield lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    logger.removeHandler(caplog.handler)


def test_generation_longer_than_any_training_target_warns(warnings):
    constraints.check(_cfg({"max_source_length": 512, "max_target_length": 64, "generation": {"max_new_tokens": 200}}))
    constraints.check(_cfg({"max_length": 256, "generation": {"max_new_tokens": 300}}))
    assert warnings() == [
        "task.generation.max_new_tokens=200 is longer than any training target (task.max_target_length=64): "
        "generations that long were never trained",
        "task.generation.max_new_tokens=300 is longer than any training target (task.max_length=256): "
        "generations that long were never trained"]


def test_eval_and_save_cadence_beyond_the_run_warns(warnings):
    constraints.check_steps(_cfg({}, {"eval_every": 500, "save_every": 1000}), total=300, features=9600)
    assert warnings() == [
        "trainer.eval_every=500 is more than the run's 300 steps: never evaluated mid-run, only at each epoch's end",
        "trainer.save_every=1000 is more than the run's 300 steps: never saved mid-run, only at each epoch's end"]


def test_a_step_bigger_than_the_training_set_warns(warnings):
    constraints.check_steps(_cfg({}, {"batch_size": 16, "grad_accum": 4}), total=3, features=100, processes=2)
    assert warnings() == ["one optimizer step holds 128 examples (trainer.batch_size=16 × grad_accum=4 × 2 processes) "
                          "but training has 100 features: one step per epoch, on fewer examples than configured"]


def test_limits_are_inclusive_where_the_setting_still_works(warnings):
    constraints.check(_cfg({"max_length": 64, "stride": 16, "generation": {"max_new_tokens": 64}}))
    constraints.check_steps(_cfg({}, {"eval_every": 300, "save_every": 300}, warmup=299), total=300, features=32)
    assert warnings() == []
    with pytest.raises(FtuneError, match="task.stride"):
        constraints.check(_cfg({"max_length": 64, "stride": 64}))


@pytest.mark.parametrize("task", ["ner", "qa", "classification", "seq2seq", "translation", "sft", "dpo"])
def test_the_shipped_task_defaults_pass(task, compose_config, warnings):
    constraints.check(compose_config("train", [f"task={task}"]))
    assert warnings() == []


def test_a_cadence_warning_is_one_line_of_a_run_that_completes(tmp_path, tiny_model_dir, tiny_ner_data, capsys,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli_exit_code("train", f"model.name_or_path={tiny_model_dir}", "task=ner",
                         f"task.data.train={tiny_ner_data['train']}", "trainer.max_steps=2", "trainer.eval_every=5",
                         "trainer.batch_size=16", f"run_dir={tmp_path / 'run'}", "logger.console=none")
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "WARNING" in line]
    assert len(lines) == 1 and "trainer.eval_every=5 is more than the run's 2 steps" in lines[0], err
    assert (tmp_path / "run" / "results.json").exists()
