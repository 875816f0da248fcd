"""The number of optimizer steps: trainer.epochs (exact), the step rule when it is null (trainer.min_epochs raised
until trainer.min_steps, up to trainer.max_epochs), trainer.max_steps, and the start-up line (ftune/engine/steps.py)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ftune.engine.steps import epochs_for, plan, steps_per_epoch, total_steps
from tests.conftest import run_cli


def trainer(**overrides):
    """trainer settings with the step rule off (epochs null, no min_steps: min_epochs exactly) unless overridden"""
    values = {"epochs": None, "max_steps": None, "min_epochs": 3, "min_steps": None, "max_epochs": None,
              "batch_size": 32, "grad_accum": 1}
    return OmegaConf.create({**values, **overrides})


def test_steps_per_epoch_rounds_up_batches_processes_and_accumulation():
    assert steps_per_epoch(1000, 32, 1) == 32  # 31.25 batches: the last one is short
    assert steps_per_epoch(1000, 32, 2) == 16
    assert steps_per_epoch(1000, 32, 1, processes=3) == 11  # 32 batches over 3 processes: 11 each
    assert steps_per_epoch(5, 32, 4) == 1


@pytest.mark.parametrize(("examples", "epochs", "steps"), [
    (1000, 10, 320),     # 32 steps per epoch: 1,000 needs 32 epochs, capped at 10
    (3400, 10, 1070),    # 107 per epoch: ceil(1000 / 107) = 10 epochs, 1,070 steps
    (4000, 8, 1000),     # 125 per epoch: exactly 8 epochs
    (15000, 3, 1407),    # 469 per epoch: 3 epochs already make 1,407 steps, the rule changes nothing
])
def test_min_steps_raises_epochs_up_to_the_cap(examples, epochs, steps):
    cfg = trainer(min_steps=1000, max_epochs=10)
    assert epochs_for(examples, cfg) == epochs
    assert total_steps(examples, cfg) == steps


def test_set_epochs_are_exact_and_max_steps_overrides_both():
    assert total_steps(3400, trainer()) == 321  # no min_steps: min_epochs
    assert total_steps(3400, trainer(min_steps=1000)) == 1070  # no cap: as many epochs as it takes
    assert total_steps(100, trainer(min_steps=1000)) == 1000  # 4 steps per epoch: 250 epochs
    assert total_steps(3400, trainer(min_steps=1000, max_steps=50)) == 50  # max_steps overrides both
    assert epochs_for(1000, trainer(epochs=2, min_steps=1000, max_epochs=10)) == 2  # epochs given: exactly
    assert epochs_for(3400, trainer(min_epochs=20, min_steps=1000, max_epochs=10)) == 20  # never below min_epochs


def test_the_start_up_line_says_what_decided():
    assert plan(3400, trainer()) == "3,400 examples: 3 epochs, 321 steps"
    assert plan(3400, trainer(epochs=2, min_steps=1000, max_epochs=10)) == "3,400 examples: 2 epochs, 214 steps"
    assert plan(3400, trainer(min_steps=1000, max_epochs=10)) == (
        "3,400 examples: 10 epochs, 1,070 steps (trainer.min_steps=1000 raised trainer.min_epochs=3)")
    assert plan(1000, trainer(min_steps=1000, max_epochs=10)) == (
        "1,000 examples: 10 epochs, 320 steps (trainer.min_steps=1000 raised trainer.min_epochs=3; "
        "capped by trainer.max_epochs=10)")
    assert plan(15000, trainer(min_steps=1000, max_epochs=10)) == (
        "15,000 examples: 3 epochs, 1,407 steps (trainer.min_epochs: the step rule adds none)")
    assert plan(3400, trainer(max_steps=50)) == "3,400 examples: 1 epoch, 50 steps (trainer.max_steps=50)"


def test_train_prints_the_plan_and_trains_the_raised_epochs(tiny_train_overrides, tmp_path):
    """`ftune train` logs the start-up line and makes the steps it announced (96 sentences, batch 16: 6 a epoch)."""
    run_cli("train", *[o for o in tiny_train_overrides if not o.startswith("trainer.epochs=")], "trainer.min_epochs=1",
            "trainer.min_steps=10", "logger.report=false")
    run = tmp_path / "run"
    line = "96 examples: 2 epochs, 12 steps (trainer.min_steps=10 raised trainer.min_epochs=1)"
    assert any(text.endswith(line) for text in (run / "train.log").read_text().splitlines())
    events = [json.loads(text) for text in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "end"] == [12]


def test_the_default_step_rule_raises_the_epochs_of_a_small_data_set(tiny_train_overrides):
    """Composed as a user composes it (without the test helpers' pin): the step rule is the default (epochs null,
    3 raised to reach 1,000 steps, at most 10), so 96 sentences at batch 16 train 10 epochs, 60 steps; a number
    of epochs given is exact."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("ftune.configs", version_base="1.3"):
        cfg = compose("train", overrides=[o for o in tiny_train_overrides if not o.startswith("trainer.epochs=")])
    GlobalHydra.instance().clear()
    assert (cfg.trainer.epochs, cfg.trainer.min_epochs, cfg.trainer.min_steps, cfg.trainer.max_epochs) == (
        None, 3, 1000, 10)
    assert plan(96, cfg.trainer) == ("96 examples: 10 epochs, 60 steps (trainer.min_steps=1000 raised "
                                     "trainer.min_epochs=3; capped by trainer.max_epochs=10)")
    assert plan(15000, OmegaConf.merge(cfg.trainer, {"batch_size": 32})).startswith("15,000 examples: 3 epochs, 1,407")
    assert plan(96, OmegaConf.merge(cfg.trainer, {"epochs": 2})) == "96 examples: 2 epochs, 12 steps"  # as given
