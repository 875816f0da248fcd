"""trainer.compile=true end to end on CPU (inductor): train, save best/ and checkpoints, resume, reload
best/, evaluate and predict. The saved weights must be the eager model's (no `_orig_mod.` prefix that a
torch.compile wrapper puts on every state-dict key), or nothing can load them."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import crash_at_step, run_cli

pytestmark = pytest.mark.slow  # inductor compiles forward and backward graphs: ~1 min on 2 CPU cores


def _train(compose_config, overrides):
    from ftune.commands import train

    return train.run(compose_config("train", overrides))


def test_a_compiled_run_saves_resumes_reloads_evaluates_and_predicts(compose_config, tiny_train_overrides,
                                                                      tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [o for o in tiny_train_overrides if not o.startswith("run_dir=")]
    common += ["trainer.max_steps=6", "trainer.save_every=2", "trainer.eval_every=2", "trainer.keep_last=10"]
    eager = _train(compose_config, [*common, f"run_dir={tmp_path / 'eager'}"])
    compiled_dir = tmp_path / "compiled"
    with crash_at_step(3), pytest.raises(RuntimeError, match="simulated crash"):
        _train(compose_config, [*common, "trainer.compile=true", f"run_dir={compiled_dir}"])
    assert (compiled_dir / "checkpoints" / "latest").read_text() == "step-2"
    compiled = _train(compose_config, [*common, "trainer.compile=true", f"run_dir={compiled_dir}", "resume=true"])

    assert compiled["steps"] == eager["steps"] == 6
    for folder in ("best", "checkpoints/step-6"):
        a = load_file(tmp_path / "eager" / folder / "model.safetensors")
        b = load_file(compiled_dir / folder / "model.safetensors")
        assert a.keys() == b.keys(), folder  # no `_orig_mod.` keys
        # not bit-equal to eager: inductor draws dropout masks from its own generator
        assert all(a[k].shape == b[k].shape and torch.isfinite(b[k]).all() for k in a), folder

    run_cli("eval", f"run_dir={compiled_dir}", "split=test")
    assert json.loads((compiled_dir / "eval_test.json").read_text())["f1"] == pytest.approx(compiled["test"]["f1"])
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("Angela Merkel met Emmanuel Macron in Paris .\n")
    run_cli("predict", f"run_dir={compiled_dir}", f"input={source}", f"output={target}")
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["text"].startswith("Angela")
