"""The model card takes its metadata from the task's facts, so no task lags behind a side table (issue 25:
DPO cards were tagged text-classification, with a classification pipeline as their usage example)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ftune import registry
from ftune.card import build_card


def _run(tmp_path, task_name: str):
    run_dir = tmp_path / "run"
    (run_dir / "best").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"task": {"name": task_name}, "model": {"name": "tiny", "name_or_path": "tiny"},
                                     "peft": {"name": "none"}, "freeze": {"name": "none"}}), run_dir / "config.yaml")
    (run_dir / "results.json").write_text(json.dumps({"task": task_name, "validation": {"loss": 0.5}}))
    return run_dir


def test_dpo_card_is_text_generation(tmp_path):
    run_dir = _run(tmp_path, "dpo")
    card = build_card(run_dir / "best", run_dir=run_dir)
    assert card.data.pipeline_tag == "text-generation"
    assert "pipeline('text-generation'" in card.text and "text-classification" not in card.text


@pytest.mark.parametrize("name", sorted(registry.TASKS))
def test_every_card_carries_its_tasks_tag(tmp_path, name):
    run_dir = _run(tmp_path, name)
    card = build_card(run_dir / "best", run_dir=run_dir)
    assert card.data.pipeline_tag == registry.TASKS[name].target.pipeline_tag
