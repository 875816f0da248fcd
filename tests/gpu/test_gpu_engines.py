"""FSDP2 on one GPU process (NCCL), QLoRA with bitsandbytes' CUDA kernels, trainer.compile=true end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.conftest import record, source_env, train_events

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]


def test_fsdp2_world_size_1_trains_saves_resumes_and_best_loads_on_the_cpu(ner_overrides, tmp_path):
    """torchrun with one process on the GPU (NCCL), trainer.strategy=fsdp with the model really sharded by
    FSDP2 over that one rank (tests/gpu/fsdp_one_gpu_worker.py: ftune itself shards only from 2 processes),
    checkpoints with per-rank optimizer files, a SIGKILL after step 5 then resume=true, best/ on the CPU."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    common = [*ner_overrides, "trainer.strategy=fsdp", "trainer.precision=bf16", "trainer.save_every=2"]
    jobs = [{"args": [*common, f"run_dir={tmp_path / 'full'}"]},
            {"args": [*common, f"run_dir={tmp_path / 'killed'}"], "kill_at": 5}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    worker = str(REPO / "tests" / "gpu" / "fsdp_one_gpu_worker.py")
    first = subprocess.run([*TORCHRUN, worker, str(tmp_path / "jobs.json")], cwd=tmp_path, env=source_env(),
                           capture_output=True, text=True, timeout=300)
    assert (tmp_path / "full" / "results.json").exists(), first.stderr[-4000:]
    assert first.returncode != 0 and not (tmp_path / "killed" / "results.json").exists()  # killed at step 5
    (tmp_path / "resume.json").write_text(json.dumps([{"args": [*jobs[1]["args"], "resume=true"]}]))
    resumed = subprocess.run([*TORCHRUN, worker, str(tmp_path / "resume.json")], cwd=tmp_path, env=source_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    full, again = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("full", "killed"))
    assert full["strategy"]["name"] == "fsdp" and full["train"]["processes"] == 1 and full["precision"] == "bf16"
    shards = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("step-*/optimizer*"))
    assert shards and all(name.startswith("optimizer-rank") for name in shards)  # the sharded optimizer's files
    assert again["steps"] == full["steps"] and again["best_step"] == full["best_step"]
    assert all(math.isfinite(e["loss"]) for e in train_events(tmp_path / "full"))
    assert again["validation"]["f1"] == pytest.approx(full["validation"]["f1"], abs=1e-3)
    assert again["validation"]["loss"] == pytest.approx(full["validation"]["loss"], rel=1e-3)
    record("fsdp_world_1_parameter_mb_per_rank", full["strategy"].get("parameter_mb_per_rank"))
    record("fsdp_world_1_optimizer_state_mb_per_rank", full["strategy"].get("optimizer_state_mb_per_rank"))

    best = tmp_path / "full" / "best"
    model = AutoModelForTokenClassification.from_pretrained(best)  # on the CPU, with no process group
    assert next(model.parameters()).device.type == "cpu" and model.num_labels == len(model.config.id2label)
    inputs = AutoTokenizer.from_pretrained(best)("Angela Merkel visited Paris .", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_qlora_nf4_trains_the_adapter_on_cuda(sft_overrides, train, tmp_path, monkeypatch):
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (make gpu-wheels left it out?)")
    import torch

    from ftune.engine.loop import Engine

    seen = {}
    fit = Engine.fit

    def recording_fit(self, *args, **kwargs):
        model = self.accelerator.unwrap_model(self.model)
        seen["before"] = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
        torch.cuda.reset_peak_memory_stats()
        state = fit(self, *args, **kwargs)
        seen["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        seen["after"] = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
        seen["model"] = model
        return state

    monkeypatch.setattr(Engine, "fit", recording_fit)
    run = tmp_path / "run"
    results = train([*sft_overrides, "model.quantization=nf4", "peft=lora", "optimizer.lr=1e-2", "trainer.precision=bf16",
                     f"run_dir={run}"])
    quantized = [m for m in seen["model"].modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(m.weight.dtype == torch.uint8 and m.weight.device.type == "cuda" for m in quantized)
    moved = {k for k in seen["before"] if not torch.equal(seen["before"][k], seen["after"][k])}
    assert moved and all("lora_" in k for k in moved), sorted(moved)[:5]  # the 4-bit base stays bit-identical
    assert all(math.isfinite(e["loss"]) for e in train_events(run))
    assert (run / "best" / "adapter_model.safetensors").exists() and not (run / "best" / "model.safetensors").exists()
    from tests.conftest import run_cli

    run_cli("eval", f"run_dir={run}", "device=cuda")  # the adapter on the base quantised again: the same loss
    evaluated = json.loads((run / "eval_validation.json").read_text())
    assert evaluated["loss"] == pytest.approx(results["validation"]["loss"], rel=1e-3)
    record("qlora_nf4_tiny_llama_peak_cuda_mib", round(seen["peak_mib"], 1))


def test_compile_end_to_end_matches_eager(ner_overrides, train, tmp_path):
    """trainer.compile=true (dynamic shapes: length-grouped batches) trains, evaluates and saves a best/
    that loads; its losses follow the eager run's."""
    runs = {}
    for compiled in (False, True):
        runs[compiled] = train([*ner_overrides, "trainer.precision=bf16", f"trainer.compile={str(compiled).lower()}",
                                f"run_dir={tmp_path / f'compile_{compiled}'}"])
    eager, compiled = runs[False], runs[True]
    assert compiled["steps"] == eager["steps"]
    losses = {c: [e["loss"] for e in train_events(tmp_path / f"compile_{c}")] for c in (False, True)}
    assert all(math.isfinite(v) for v in losses[True])
    assert losses[True] == pytest.approx(losses[False], rel=0.05, abs=0.05)  # bf16, other kernels: close, not equal
    assert compiled["validation"]["loss"] == pytest.approx(eager["validation"]["loss"], rel=0.05)
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "compile_True" / "best")
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())  # saved unwrapped
    record("compile_train_seconds", compiled["train"]["seconds"])
    record("eager_train_seconds", eager["train"]["seconds"])
    record("compile_samples_per_s_over_eager", round(compiled["train"]["samples_per_s"] / eager["train"]["samples_per_s"], 3))
