"""NaN injection: a non-finite loss stops the run naming the step (checkpoints intact), or, with
trainer.nonfinite=skip, the update is skipped and counted."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from ftune.commands import train
from ftune.errors import FtuneError
from ftune.tasks.ner import NerTask


@pytest.fixture
def nan_at_call(monkeypatch):
    """The training loss of the given call (1-based; counting micro-batches under autograd) becomes NaN."""
    def install(bad_call: int):
        original, calls = NerTask.loss, {"n": 0}

        def loss(self, outputs, batch):
            total, count = original(self, outputs, batch)
            if torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] == bad_call:
                    total = total * float("nan")
            return total, count

        monkeypatch.setattr(NerTask, "loss", loss)
    return install


def test_nan_stops_the_run_naming_the_step(nan_at_call, compose_config, tiny_train_overrides, tmp_path):
    nan_at_call(4)
    with pytest.raises(FtuneError) as error:
        train.run(compose_config("train", [*tiny_train_overrides, "trainer.save_every=2"]))
    message = error.value.one_line()
    assert "training: loss or gradients are not finite (NaN/inf) at step 4" in message
    assert "the last checkpoint (step 2) is intact" in message and "trainer.nonfinite=skip" in message
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-2"]  # saved before the fault, untouched after it
    assert not (tmp_path / "run" / "results.json").exists()


def test_nan_steps_can_be_skipped_and_are_counted(nan_at_call, compose_config, tiny_train_overrides, tmp_path):
    nan_at_call(4)
    results = train.run(compose_config("train", [*tiny_train_overrides, "trainer.nonfinite=skip", "trainer.log_every=1"]))
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    skipped = [e["skipped_steps"] for e in events if e["event"] == "train"]
    assert skipped[2] == 0 and skipped[3] == 1 and skipped[-1] == 1
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in events if e["event"] == "train" and e["step"] != 4)
    # the NaN step changed no weight: the run finished with finite weights and a finite validation loss
    assert math.isfinite(results["validation"]["loss"])
    weights = load_file(tmp_path / "run" / "best" / "model.safetensors")
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    state = json.loads(next((tmp_path / "run" / "checkpoints").glob("step-*")).joinpath("trainer_state.json").read_text())
    assert state["skipped"] == 1
