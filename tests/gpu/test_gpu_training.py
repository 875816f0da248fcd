"""bf16 and fp16 training on one GPU, for an encoder task (NER) and for sft: the run stays on the GPU, fp16
scales its loss, a seeded run has no NaN, and a run killed then resumed equals an uninterrupted one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import crash_at_step
from tests.gpu.conftest import record, train_events

pytestmark = pytest.mark.gpu


@pytest.fixture
def engines(monkeypatch):
    """Every Engine whose fit() ran in this test, with the device of its parameters and its loss scaler."""
    from ftune.engine.loop import Engine

    seen: list[dict] = []
    fit = Engine.fit

    def recording_fit(self, *args, **kwargs):
        entry = {"device": next(self.model.parameters()).device.type, "mixed": self.accelerator.mixed_precision,
                 "scaler": getattr(self.accelerator, "scaler", None)}
        seen.append(entry)
        try:
            return fit(self, *args, **kwargs)
        finally:
            if entry["scaler"] is not None:
                entry["scale"] = float(entry["scaler"].get_scale())

    monkeypatch.setattr(Engine, "fit", recording_fit)
    return seen


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(folder / name)


def _resume_matches(train, common: list[str], root: Path, engines: list[dict], precision: str, crash: int) -> dict:
    import torch

    full = train([*common, f"run_dir={root / 'full'}"])
    with crash_at_step(crash), pytest.raises(RuntimeError, match="simulated crash"):
        train([*common, f"run_dir={root / 'resumed'}"])
    resumed = train([*common, f"run_dir={root / 'resumed'}", "resume=true"])

    assert full["precision"] == resumed["precision"] == precision
    assert all(e["device"] == "cuda" for e in engines), engines  # no silent CPU fallback
    if precision == "fp16":  # fp16 trains through a loss scaler, and its scale stayed usable
        assert all(e["scaler"] is not None and math.isfinite(e["scale"]) and e["scale"] >= 1 for e in engines), engines
    else:
        assert all(e["scaler"] is None for e in engines)
    losses = {name: {e["step"]: e["loss"] for e in train_events(root / name)} for name in ("full", "resumed")}
    assert losses["full"] and all(math.isfinite(v) for v in losses["full"].values()), losses["full"]  # seeded: no NaN
    assert resumed["steps"] == full["steps"] > crash and resumed["best_step"] == full["best_step"]
    for step, loss in losses["full"].items():
        if step > crash - 1 and step in losses["resumed"]:  # the steps the resumed run did itself
            assert losses["resumed"][step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step
    a, b = _weights(root / "full" / "best"), _weights(root / "resumed" / "best")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    record(f"resume_max_weight_difference_{precision}_{root.name}", worst)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    for split in ("validation", "test"):
        if split in full:
            for metric, value in full[split].items():
                if isinstance(value, float):
                    assert resumed[split][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), (split, metric)
    return full


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_ner_mixed_precision_trains_without_nan_and_resumes_exactly(precision, train, ner_overrides, engines,
                                                                    deterministic, tmp_path):
    common = [*ner_overrides, f"trainer.precision={precision}", "trainer.save_every=3", "trainer.eval_every=4",
              "trainer.keep_last=10"]
    full = _resume_matches(train, common, tmp_path / "ner", engines, precision, crash=5)
    assert full["validation"]["loss"] < 5 and 0 <= full["validation"]["f1"] <= 1
    record(f"ner_{precision}_samples_per_s", full["train"]["samples_per_s"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_sft_mixed_precision_trains_without_nan_and_resumes_exactly(precision, train, sft_overrides, engines,
                                                                    deterministic, tmp_path):
    common = [*sft_overrides, f"trainer.precision={precision}", "trainer.save_every=3", "trainer.eval_every=4",
              "trainer.keep_last=10"]
    full = _resume_matches(train, common, tmp_path / "sft", engines, precision, crash=5)
    assert math.isfinite(full["validation"]["loss"]) and math.isfinite(full["validation"]["perplexity"])
    saved = json.loads((tmp_path / "sft" / "full" / "results.json").read_text())
    assert saved["precision"] == precision


def test_data_loader_pins_memory_and_workers_give_the_same_run(train, ner_overrides, deterministic, tmp_path,
                                                              monkeypatch):
    """trainer.num_workers=2 on CUDA: pinned host batches (non-blocking copies), worker processes that do
    not touch CUDA, and the same losses and weights as batches made in the main process."""
    import torch
    import torch.utils.data

    import ftune.engine.loop as loop

    loaders: list[dict] = []

    class Recording(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append({"pin_memory": self.pin_memory, "workers": self.num_workers})

        def __iter__(self):
            for batch in super().__iter__():
                if self.num_workers:
                    tensors = [v for v in batch["inputs"].values() if torch.is_tensor(v)]
                    loaders[-1]["pinned"] = all(t.is_pinned() for t in tensors)
                yield batch

    monkeypatch.setattr(loop, "DataLoader", Recording)
    runs = {}
    for workers in (0, 2):
        runs[workers] = train([*ner_overrides, "trainer.precision=bf16", f"trainer.num_workers={workers}",
                               f"run_dir={tmp_path / f'workers{workers}'}"])
    assert any(entry["workers"] == 2 and entry["pin_memory"] for entry in loaders), loaders
    assert any(entry.get("pinned") for entry in loaders), loaders  # the workers' batches arrived pinned
    a, b = ({e["step"]: e["loss"] for e in train_events(tmp_path / f"workers{w}")} for w in (0, 2))
    assert a == pytest.approx(b, rel=1e-6)
    assert runs[2]["validation"]["f1"] == pytest.approx(runs[0]["validation"]["f1"], abs=1e-9)
    record("ner_bf16_samples_per_s_2_workers", runs[2]["train"]["samples_per_s"])
