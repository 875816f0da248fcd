"""Tracker backends with the real libraries, offline: MLflow on a temporary sqlite store, W&B in offline
mode, TensorBoard event files. What they hold is read back and compared with metrics.jsonl and config.yaml."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftune.commands import train
from ftune.errors import FtuneError
from ftune.loggers.base import flatten
from tests.conftest import run_cli

# find_spec, not importorskip: importing mlflow costs ~1.6 s in every collecting worker; the tests import it
pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mlflow", "wandb")),
                                reason="the track extra (mlflow, wandb) is not installed")


@pytest.fixture
def trackers_offline(tmp_path, monkeypatch):
    """A private sqlite MLflow store and W&B offline, both under tmp_path (the working directory too)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ftune-test")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "ftune-test")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _metric_points(rows: list[dict]) -> dict[str, Counter]:
    """(step, value) per metric name, from metrics.jsonl's train and eval rows, as the trackers log them
    (a multiset: `epoch` is in both the train and the eval row of a step)."""
    points: dict[str, Counter] = {}
    for row in rows:
        if row["event"] in ("train", "eval"):
            for key, value in row.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and key not in ("step", "total_steps"):
                    points.setdefault(key, Counter())[(row["step"], float(value))] += 1
    return points


def _mlflow_runs(client, experiment="ftune-test"):
    experiment = client.get_experiment_by_name(experiment)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_flatten_dots_keys_and_cuts_long_values():
    flat = flatten({"a": {"b": 1, "c": {"d": None}}, "l": [1, 2], "e": {}, "s": "x" * 900}, max_length=100)
    assert flat["a.b"] == 1 and flat["a.c.d"] is None and flat["l"] == "[1, 2]" and flat["e"] == "{}"
    assert len(flat["s"]) == 100 and "cut: 900 characters" in flat["s"]


def test_a_tracker_that_fails_mid_run_warns_once_and_training_goes_on(tmp_path, caplog):
    from ftune.loggers.base import RunInfo, Tracker
    from ftune.loggers.mlflow import key

    class Down(Tracker):
        name = "down"

        def metrics(self, step, values):
            raise ConnectionError("server went away")

    tracker = Down(RunInfo(tmp_path, {}, {}, {}, "run", resume=False))
    for step in (1, 2, 3):
        tracker({"event": "train", "step": step, "loss": 1.0})
    tracker.close()
    assert tracker.errors == 3 and caplog.text.count("server went away") == 1
    assert key("test/per_class/4 (great)/f1") == "test/per_class/4 _great_/f1"  # a name MLflow accepts


def test_unknown_backend_fails_at_start_with_one_line(compose_config, tiny_train_overrides, tmp_path):
    cfg = compose_config("train", [*tiny_train_overrides, "logger.backends=[mlfow]"])
    with pytest.raises(FtuneError, match="unknown logger backend `mlfow`.*did you mean `mlflow`"):
        train.run(cfg)
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.slow
def test_mlflow_run_killed_9_then_resumed_is_one_run_equal_to_metrics_jsonl(
        compose_config, tiny_train_overrides, tmp_path, trackers_offline):
    client = trackers_offline
    overrides = [*tiny_train_overrides, "logger.backends=[mlflow]", "trainer.save_every=2", "trainer.log_every=1",
                 "trainer.eval_every=3", "trainer.epochs=1"]  # 6 steps: evals at 3 and 6, crash after 5
    import os
    import signal
    import subprocess

    from tests.reliability.test_kill_resume import KILL_AT_STEP

    wrapper = tmp_path / "kill_at_step.py"
    wrapper.write_text(KILL_AT_STEP.replace("STEP", "5"))
    killed = subprocess.run([sys.executable, str(wrapper), "train", *overrides], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (first,) = _mlflow_runs(client)
    assert first.info.status == "RUNNING"  # kill -9: nobody ended it
    train.run(compose_config("train", [*overrides, "resume=true"]))

    runs = _mlflow_runs(client)
    assert len(runs) == 1 and runs[0].info.run_id == first.info.run_id  # reattached, not a second run
    run, run_dir = runs[0], tmp_path / "run"
    assert run.info.status == "FINISHED"
    assert run.data.tags["task"] == "ner" and run.data.tags["model"] == "tiny" and run.data.tags["peft"] == "none"
    # params: the flattened config; the one value changed by the resume is a tag (MLflow refuses to change params)
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    expected = {k: "null" if v is None else str(v) for k, v in flatten(config).items()}
    assert run.data.tags["resumed.resume"] == "True" and run.data.params.pop("resume") == "False"
    expected.pop("resume")
    assert run.data.params == expected
    # metrics: every (step, value) of metrics.jsonl, under the same names, each step once
    points = _metric_points(_rows(run_dir))
    for key, expected_points in points.items():
        history = client.get_metric_history(run.info.run_id, key)
        assert Counter((m.step, m.value) for m in history) == expected_points, key  # replayed steps: not twice
    results = json.loads((run_dir / "results.json").read_text())
    assert run.data.metrics["test/f1"] == results["test"]["f1"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "results.json", "report.html", "README.md"} <= artifacts


def _wandb_records(path: Path) -> list:
    """The records of a .wandb transaction log (LevelDB log format: 32 KiB blocks of crc, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data, records, pending = path.read_bytes(), [], b""
    offset, block = 7, 32768  # header: ":W&B", magic 0xBEE1, version
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # the rest of a block too small for a header is padding
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        elif kind == 0:
            break
    return records


def _wandb_run(run_dir: Path) -> dict:
    """The offline run under run_dir/wandb, read back from its .wandb log: run, config, history, summary."""
    (log,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history, config, summary, run = {}, {}, {}, None
    for record in _wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history[items["_step"]] = items
        elif kind == "run":
            run = record.run
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
    config.pop("_wandb", None)
    return {"history": history, "run": run, "config": config, "summary": summary}


@pytest.mark.slow  # W&B starts its wandb-core service process for each job
def test_a_two_job_sweep_gives_two_runs_per_tracker_with_the_sweep_tag(
        tiny_train_overrides, tmp_path, trackers_offline):
    client = trackers_offline
    overrides = [o for o in tiny_train_overrides if not o.startswith("run_dir=")]
    run_cli("train", "-m", *overrides, "optimizer.lr=1e-3,2e-3", "trainer.epochs=1",
            "logger.backends=[mlflow,wandb,tensorboard]", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    runs = _mlflow_runs(client)
    assert len(runs) == 2 and {r.data.tags["sweep"] for r in runs} == {str(tmp_path / "sweep")}
    assert sorted(r.data.tags["job"] for r in runs) == ["0", "1"]
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["0.001", "0.002"]
    for job in ("0", "1"):
        run_dir = tmp_path / "sweep" / job
        logged = _wandb_run(run_dir)
        assert logged["run"].run_group == str(tmp_path / "sweep")  # one W&B run per job, grouped by sweep
        config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
        assert logged["config"]["optimizer.lr"] == config["optimizer"]["lr"]
        assert logged["config"].keys() == flatten(config).keys()
        points = _metric_points(_rows(run_dir))
        for key, expected in points.items():
            assert {(s, float(h[key])) for s, h in logged["history"].items() if key in h} == set(expected), key
        assert logged["summary"]["test/f1"] == json.loads((run_dir / "results.json").read_text())["test"]["f1"]
        # TensorBoard: the hparams of the job next to its scalars, for the HParams view
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir / "tensorboard"))
        events.Reload()
        assert "train/loss" in events.Tags()["scalars"] and "final/validation/f1" in events.Tags()["scalars"]
        assert "_hparams_/session_start_info" in events.summary_metadata
    report = (tmp_path / "sweep" / "report.html").read_text()
    assert "optimizer.lr" in report and "data:image/png;base64," in report


@pytest.mark.slow
def test_two_torchrun_processes_make_one_wandb_run(tmp_path, tiny_model_dir, tiny_ner_data):
    import os
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    overrides = [f"model.name_or_path={tiny_model_dir}", "model.name=tiny", f"task.data.train={tiny_ner_data['train']}",
                 f"task.data.validation={tiny_ner_data['validation']}", "trainer.max_steps=2", "trainer.batch_size=8",
                 "logger.console=plain", "logger.backends=[wandb]", "logger.report=false", "run_dir=ddp"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ftune", "train", *overrides], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1  # rank 0 logs, rank 1 does not
    assert _wandb_run(tmp_path / "ddp")["history"]
