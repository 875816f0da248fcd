"""FSDP2 (trainer.strategy=fsdp) on 2 gloo CPU processes against 1 process with the same global batch.

All 2-process jobs run in one torchrun launch (tests/distributed/fsdp_worker.py) to pay the imports once; the faults
(a NaN on one rank, a SIGKILL) are patched in by the worker. 1-process references run in-process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_data

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
CHAT = [{"role": "user", "content": "what colour is the sky ?"}, {"role": "assistant", "content": "the sky is blue"}]


@pytest.fixture(scope="module")
def models(no_dropout_model, tiny_llama_dir) -> dict[str, Path]:
    """The tiny BERT without dropout (conftest) and the tiny Llama."""
    return {"bert": no_dropout_model, "llama": tiny_llama_dir}


def _jobs(models, data, root: Path) -> dict[str, list[str]]:
    ner = [f"model.name_or_path={models['bert']}", "model.name=tiny", f"task.data.train={data['train']}",
           f"task.data.validation={data['validation']}", f"task.data.test={data['test']}", "trainer.epochs=2",
           "optimizer.lr=1e-3", "trainer.precision=fp32", "logger.console=none", "trainer.log_every=1",
           "trainer.max_grad_norm=0.05",  # tight: every step is clipped
           "trainer.batch_size=8", "trainer.eval_batch_size=5"]  # 7 test batches: 4 on rank 0, 3 (+1 padding pass) on rank 1
    sft = ["task=sft", "task.max_length=128", f"task.data.train={data['chat']}", f"task.data.validation={data['chat']}",
           f"model.name_or_path={models['llama']}", "model.name=tiny", "trainer.max_steps=4", "trainer.log_every=1",
           "trainer.precision=fp32", "logger.console=none", "optimizer.lr=1e-3", "trainer.batch_size=4",
           "trainer.eval_batch_size=3"]
    lora = ["peft=lora", "peft.dropout=0.0", "optimizer.lr=1e-2"]
    generate = ["task.eval_generate=true", "task.generation.max_new_tokens=4"]
    return {"bert_full": ner, "bert_lora": [*ner, *lora], "llama_full": sft, "llama_lora": [*sft, *lora, *generate]}


@pytest.fixture(scope="module")
def runs(models, tiny_ner_data, tmp_path_factory, compose_config):
    """Every 2-process FSDP job (one launch, then the resume of the killed one) and the 1-process references."""
    from ftune.commands import train

    root = tmp_path_factory.mktemp("fsdp")
    chat = write_data(root / "chat.jsonl", [{"messages": CHAT}, {"prompt": "hello", "response": "fine , thank you"}] * 8)
    data = {**tiny_ner_data, "chat": chat}
    jobs = _jobs(models, data, root)
    # 96 NER sentences, 16 conversations: whole global batches of 16 and 8, so no rank repeats a batch
    fsdp = ["trainer.strategy=fsdp"]
    launch = [{"args": [*args, *fsdp, f"run_dir={root / ('fsdp_' + name)}"]} for name, args in jobs.items()]
    faults = [*jobs["bert_full"], *fsdp, "trainer.max_steps=4"]
    launch += [{"args": [*faults, "trainer.nonfinite=skip", f"run_dir={root / 'nan_skip'}"], "nan_at": [3, 1]},
               {"args": [*faults, "trainer.nonfinite=stop", f"run_dir={root / 'nan_stop'}"], "nan_at": [2, 1], "exit": 2},
               {"args": [*jobs["bert_full"], *fsdp, "trainer.save_every=2", f"run_dir={root / 'killed'}"], "kill_at": 5}]
    (root / "jobs.json").write_text(json.dumps(launch))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.run([*TORCHRUN, str(REPO / "tests" / "distributed" / "fsdp_worker.py"), str(root / "jobs.json")], cwd=root,
                           env=env, capture_output=True, text=True, timeout=600)
    assert (root / "nan_skip" / "results.json").exists(), first.stderr[-4000:]
    assert first.returncode != 0 and not (root / "killed" / "results.json").exists()  # rank 0 was SIGKILLed
    (root / "resume.json").write_text(json.dumps([{"args": [*launch[-1]["args"], "resume=true"]}]))
    resumed = subprocess.run([*TORCHRUN, str(REPO / "tests" / "distributed" / "fsdp_worker.py"), str(root / "resume.json")],
                             cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    # 1 process, the same global batch: 2 accumulated micro-batches of the same size
    for name, args in jobs.items():
        train.run(compose_config("train", [*args, "trainer.grad_accum=2",
                                           f"run_dir={root / ('one_' + name)}"]))
    return root, first.stderr


def _train_events(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row.get("event", "train") == "train" and "loss" in row and "lr" in row]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert_full", "bert_lora", "llama_full", "llama_lora"])
def test_two_fsdp_processes_match_one_process(runs, name):
    root, _ = runs
    one, two = root / f"one_{name}", root / f"fsdp_{name}"
    one_results, two_results = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert two_results["strategy"]["name"] == "fsdp" and two_results["train"]["processes"] == 2
    assert one_results["steps"] == two_results["steps"]
    one_events, two_events = _train_events(one), _train_events(two)
    assert [e["step"] for e in one_events] == [e["step"] for e in two_events]
    for a, b in zip(one_events, two_events, strict=True):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # the global norm, before clipping
    # the loss logged is the global one: the same curve as one process
    assert [e["loss"] for e in two_events] == pytest.approx([e["loss"] for e in one_events], rel=1e-4)
    for split in ("validation", "test"):
        if split in one_results:
            for metric, value in one_results[split].items():
                if isinstance(value, float):
                    assert two_results[split][metric] == pytest.approx(value, rel=1e-3, abs=1e-4), (split, metric)
    weights = "adapter_model.safetensors" if "lora" in name else "model.safetensors"
    a, b = load_file(one / "best" / weights), load_file(two / "best" / weights)
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)  # whole tensors, not shards
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_tight_clipping_is_applied_to_the_global_norm(runs):
    """max_grad_norm=0.05 clips every step; were each rank clipping its own shard's norm, the updates
    (and so the second step's norm and the final weights) would differ from one process's."""
    root, _ = runs
    events = _train_events(root / "fsdp_bert_full")
    assert all(e["grad_norm"] > 0.05 for e in events)


@pytest.mark.slow
def test_a_nan_on_one_rank_makes_both_ranks_skip_or_stop_at_the_same_step(runs):
    root, stderr = runs
    assert stderr.count("step 3: loss or gradients not finite, update skipped") == 2  # rank 0 and rank 1
    skipped = [e["skipped_steps"] for e in _train_events(root / "nan_skip")]
    assert skipped == [0, 0, 1, 1]
    assert stderr.count("not finite (NaN/inf) at step 2") == 2  # nonfinite=stop: both ranks stop, none hangs
    assert not (root / "nan_stop" / "results.json").exists()


@pytest.mark.slow
def test_kill_9_then_resume_matches_the_uninterrupted_run(runs):
    root, _ = runs
    full, resumed = (json.loads((root / d / "results.json").read_text()) for d in ("fsdp_bert_full", "killed"))
    assert resumed["steps"] == full["steps"] and resumed["best_step"] == full["best_step"]
    assert resumed["validation"]["f1"] == pytest.approx(full["validation"]["f1"], abs=1e-6)
    assert resumed["validation"]["loss"] == pytest.approx(full["validation"]["loss"], rel=1e-6)
    a = load_file(root / "fsdp_bert_full" / "best" / "model.safetensors")
    b = load_file(root / "killed" / "best" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7, msg=key)


@pytest.mark.slow
def test_best_loads_with_from_pretrained_and_the_adapter_is_whole(runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    root, _ = runs
    model = AutoModelForTokenClassification.from_pretrained(root / "fsdp_bert_full" / "best")
    assert model.config.id2label and model.num_labels == len(model.config.id2label)
    base = AutoModelForCausalLM.from_pretrained(json.loads(
        (root / "fsdp_llama_lora" / "best" / "adapter_config.json").read_text())["base_model_name_or_path"])
    adapted = PeftModel.from_pretrained(base, root / "fsdp_llama_lora" / "best")
    saved = load_file(root / "fsdp_llama_lora" / "best" / "adapter_model.safetensors")
    lora = {k: v for k, v in adapted.state_dict().items() if "lora_" in k}
    assert len(lora) == len(saved) > 0
    assert all(v.shape[0] == 8 or v.shape[1] == 8 for v in saved.values())  # r=8 by full hidden size: gathered


@pytest.mark.slow
def test_parameters_per_rank_are_about_half_under_fsdp(runs):
    root, _ = runs
    for name in ("bert_full", "llama_full"):
        one, two = (json.loads((root / f"{kind}_{name}" / "results.json").read_text())["strategy"]
                    for kind in ("one", "fsdp"))
        for held in ("parameter_mb_per_rank", "optimizer_state_mb_per_rank"):
            assert 0.45 < two[held] / one[held] < 0.6, (name, held, one, two)  # shards are padded: a bit over half
    shards = sorted(p.name for p in (root / "killed" / "checkpoints").glob("step-*/optimizer*"))
    assert shards and all(n.startswith("optimizer-rank") for n in shards)  # each rank saved its own, none gathered


def test_strategy_errors_are_one_line(compose_config, tiny_train_overrides):
    from ftune.commands import train
    from ftune.errors import FtuneError

    cases = {"trainer.strategy=zero3": "trainer.strategy", "trainer.precision=fp16": "trainer.precision",
             "peft=adalora": "peft"}
    for override, where in cases.items():
        extra = [] if override.startswith("trainer.strategy") else ["trainer.strategy=fsdp"]
        with pytest.raises(FtuneError) as error:
            train.run(compose_config("train", [*tiny_train_overrides, *extra, override]))
        assert error.value.where == where, override


def test_accelerate_fsdp_is_refused_pointing_at_the_switch(monkeypatch):
    """accelerate sets FSDP only with GPUs; a stand-in Accelerator reports it here."""
    import types

    import accelerate

    from ftune.engine.device import make_accelerator
    from ftune.errors import FtuneError

    class FsdpAccelerator:
        def __init__(self, **kwargs):
            self.distributed_type = types.SimpleNamespace(name="FSDP")

    monkeypatch.setattr(accelerate, "Accelerator", FsdpAccelerator)
    with pytest.raises(FtuneError, match="accelerate's FSDP is not used by ftune") as error:
        make_accelerator("fp32", "cpu")
    assert "trainer.strategy=fsdp" in error.value.fix
