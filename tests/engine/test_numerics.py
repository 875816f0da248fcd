"""The engine's numerics: accumulation equals one big batch; resume equals an uninterrupted run."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from ftune.commands import train
from ftune.engine.device import make_accelerator
from ftune.engine.loop import Engine
from ftune.registry import defaults
from ftune.tasks.ner import NerTask
from tests.conftest import crash_at_step


def _engine(model_dir, task, batch_size: int, grad_accum: int) -> Engine:
    torch.manual_seed(0)
    model = task.build_model(str(model_dir), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg = OmegaConf.merge(defaults("trainer", "default"), dict(batch_size=batch_size, grad_accum=grad_accum, max_steps=1,
                                             group_by_length=False, max_grad_norm=None, log_every=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # plain SGD: the update is the gradient, unscaled
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    accelerator, _ = make_accelerator("fp32", "cpu")
    return Engine(model, task, cfg, accelerator, optimizer, scheduler)


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir, tiny_ner_data):
    from transformers import AutoTokenizer

    task = NerTask(defaults("task", "ner"))
    examples = task.load_file(str(tiny_ner_data["train"]))[:16]
    task.fit_labels(examples, {})
    features = task.featurize(examples, AutoTokenizer.from_pretrained(tiny_model_dir))
    big, accumulated = _engine(tiny_model_dir, task, 16, 1), _engine(tiny_model_dir, task, 8, 2)
    before = {k: v.clone() for k, v in big.model.state_dict().items()}
    big.fit(features, None)
    accumulated.fit(features, None)
    changed = 0
    for name, value in big.model.state_dict().items():
        other = accumulated.model.state_dict()[name]
        torch.testing.assert_close(other, value, rtol=1e-5, atol=1e-6, msg=name)
        changed += not torch.equal(value, before[name])
    assert changed > 10  # the step really moved the weights


def _run(compose_config, overrides):
    cfg = compose_config("train", overrides)
    return train.run(cfg)


def test_resume_after_a_crash_matches_an_uninterrupted_run(compose_config, tiny_train_overrides, tmp_path):
    common = [o for o in tiny_train_overrides if not o.startswith("run_dir=")]
    common += ["trainer.save_every=3", "trainer.eval_every=4", "trainer.keep_last=10",
               "logger.report=false"]  # report.html is not compared here; drawing it is most of a run's time
    full = _run(compose_config, [*common, f"run_dir={tmp_path / 'full'}"])

    with crash_at_step(5), pytest.raises(RuntimeError, match="simulated crash"):
        _run(compose_config, [*common, f"run_dir={tmp_path / 'resumed'}"])
    assert (tmp_path / "resumed" / "checkpoints" / "latest").read_text() == "step-3"
    resumed = _run(compose_config, [*common, f"run_dir={tmp_path / 'resumed'}", "resume=true"])

    assert resumed["steps"] == full["steps"] > 5
    assert resumed["best_step"] == full["best_step"]
    assert resumed["validation"] == full["validation"] and resumed["test"] == full["test"]
    for folder in ("best", f"checkpoints/step-{full['steps']}"):
        a = load_file(tmp_path / "full" / folder / "model.safetensors")
        b = load_file(tmp_path / "resumed" / folder / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
    losses = {}
    for name in ("full", "resumed"):
        for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "train":
                losses.setdefault(name, {})[event["step"]] = event["loss"]
    assert losses["resumed"][full["steps"]] == losses["full"][full["steps"]]


def test_run_directory_layout_and_pipeline_loads_best(compose_config, tiny_train_overrides, tmp_path):
    from transformers import pipeline

    results = _run(compose_config, tiny_train_overrides)
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "results.json", "best/config.json", "best/model.safetensors",
                 "best/tokenizer.json", "checkpoints/latest"):
        assert (run_dir / name).exists(), name
    step = (run_dir / "checkpoints" / "latest").read_text()
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json"):
        assert (run_dir / "checkpoints" / step / name).exists(), name
    assert not list(run_dir.rglob("*.bin")) and not list(run_dir.rglob("pytorch_model*"))
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["validation"]["f1"] == results["validation"]["f1"] and "per_type" in saved["test"]
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_events = [e for e in events if e["event"] == "train"]
    assert {"step", "epoch", "loss", "lr", "samples_per_s", "tokens_per_s", "padding_ratio"} <= train_events[0].keys()
    assert any(e["event"] == "eval" and "val/f1" in e for e in events)
    config = json.loads((run_dir / "best" / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and "B-PER" in config["label2id"]

    ner = pipeline("token-classification", model=str(run_dir / "best"), device="cpu")
    assert isinstance(ner("Angela Merkel visited Paris ."), list)


def test_refuses_to_overwrite_a_run(compose_config, tiny_train_overrides):
    from ftune.errors import FtuneError

    one_step = [*tiny_train_overrides, "trainer.max_steps=1", "logger.report=false"]
    _run(compose_config, one_step)
    with pytest.raises(FtuneError, match="already holds a run"):
        _run(compose_config, one_step)
    _run(compose_config, [*one_step, "overwrite=true"])


def test_sigterm_saves_a_checkpoint_and_stops_with_143(compose_config, tiny_train_overrides, tmp_path, monkeypatch):
    import os
    import signal

    import ftune.engine.events as events
    from ftune.errors import Interrupted

    original = events.build_subscribers

    def terminate_at_step_2(*args):
        def send(event):
            if event == {"event": "step", "step": 2}:
                os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler pre-empting the job would

        send.close = lambda: None
        return [*original(*args), send]

    monkeypatch.setattr(events, "build_subscribers", terminate_at_step_2)
    with pytest.raises(Interrupted) as stopped:
        _run(compose_config, tiny_train_overrides)
    assert stopped.value.exit_code == 143 and "resume=true" in str(stopped.value)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-2"
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
