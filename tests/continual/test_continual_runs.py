"""Continual learning through the CLI with the tiny model (slow tier): the forgetting table against separate
evaluations of the same checkpoints, and one adapter per stage leaving the earlier adapter's outputs bit-identical."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import cli_exit_code, run_cli

pytestmark = pytest.mark.slow


def _stage(overrides: list[str], run_dir, train, validation, *extra: str) -> list[str]:
    return [*[o for o in overrides if not o.startswith(("run_dir=", "task.data."))], f"run_dir={run_dir}",
            f"task.data.train={train}", f"task.data.validation={validation}", "task.data.test=null",
            "trainer.epochs=1", "trainer.batch_size=32", "logger.report=false", *extra]


def _eval_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    run_cli("eval", *args, "output_format=json")
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_forgetting_table_equals_separate_evaluations(tiny_train_overrides, tiny_ner_data, tmp_path, capsys):
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    run_cli("train", *_stage(tiny_train_overrides, first, tiny_ner_data["train"], tiny_ner_data["validation"]))
    run_cli("train", *_stage(tiny_train_overrides, second, tiny_ner_data["test"], tiny_ner_data["test"],
                             f"continual.previous=[{first}]", "logger.report=true"))
    [row] = json.loads((second / "results.json").read_text())["forgetting"]
    assert row["run"] == str(first) and row["metric"] == "f1"
    then = _eval_json(capsys, f"run_dir={first}")  # stage 1's best/ on its validation split
    now = _eval_json(capsys, f"run_dir={second}", f"file={tiny_ner_data['validation']}")
    assert row["when_trained"] == then["f1"] and row["now"] == now["f1"]
    assert row["difference"] == now["f1"] - then["f1"]
    card = (second / "best" / "README.md").read_text()
    assert "forgetting" in card and str(first) in card
    assert "Forgetting" in (second / "report.html").read_text()


def _logits(run_dir, adapter: str | None, examples: list[dict]) -> torch.Tensor:
    from ftune.inference import Inference

    loaded = Inference.load(OmegaConf.create({"run_dir": str(run_dir), "adapter": adapter, "device": "cpu"}))
    batch = loaded.task.collate(loaded.task.featurize(examples, loaded.tokenizer))
    loaded.model.eval()
    with torch.no_grad():
        return loaded.model(**batch["inputs"]).logits


def test_one_adapter_per_stage_keeps_the_earlier_adapter_bit_identical(tiny_train_overrides, tiny_ner_data,
                                                                         tmp_path, capsys):
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    lora = ["peft=lora", "optimizer.lr=1e-2"]
    run_cli("train", *_stage(tiny_train_overrides, first, tiny_ner_data["train"], tiny_ner_data["validation"],
                             *lora, "continual.adapter=s1"))
    examples = [{"tokens": "the European Commission said on Thursday".split()}, {"tokens": ["Germany", "won"]}]
    before = _logits(first, None, examples)
    assert torch.equal(before, _logits(first, "s1", examples))  # adapters/s1 is the run's best/
    run_cli("train", *_stage(tiny_train_overrides, second, tiny_ner_data["test"], tiny_ner_data["test"], *lora,
                             "continual.adapter=s2", f"continual.previous=[{first}]"))
    assert sorted(p.name for p in (second / "adapters").iterdir()) == ["s1", "s2"]
    assert torch.equal(_logits(second, "s1", examples), before)  # stage 2 did not change stage 1's adapter
    assert not torch.equal(_logits(second, "s2", examples)[..., :2], before[..., :2])
    [row] = json.loads((second / "results.json").read_text())["forgetting"]
    assert row["adapter"] == "s1" and row["difference"] == 0.0  # measured: the earlier adapter evaluated again
    capsys.readouterr()
    assert cli_exit_code("eval", f"run_dir={second}", "adapter=s3") == 2
    assert "choose from: s1, s2" in capsys.readouterr().err
