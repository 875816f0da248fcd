"""Sweeps: the summary's best-job rule, Optuna through the CLI (with the joblib launcher), Slurm config."""

import json

import pytest

from ftune.sweep import summarize
from tests.cli.test_installed import ftune


def _record(job, value, status="ok", greater=True):
    return {"job": job, "overrides": [f"optimizer.lr={job}", "model.name=tiny"], "run_dir": f"/s/{job}",
            "status": status, "metric": "mse" if not greater else "f1", "value": value,
            "greater_is_better": greater, "error": None if status == "ok" else "boom"}


def test_summary_marks_the_best_job_in_the_task_direction():
    up = summarize([_record(0, 0.5), _record(1, 0.7), _record(2, None, "failed")])
    assert up["best_job"] == 1 and up["failed"] == 1 and up["swept"] == ["optimizer.lr"]
    assert [j["best"] for j in up["jobs"]] == [False, True, False]
    down = summarize([_record(0, 0.5, greater=False), _record(1, 0.7, greater=False)])
    assert down["best_job"] == 0
    assert summarize([_record(0, None, "failed")])["best_job"] is None


@pytest.mark.slow
def test_optuna_three_trials_in_parallel_with_joblib(tmp_path, tiny_model_dir, tiny_ner_data):
    sweep = tmp_path / "optuna"
    result = ftune("train", "hparams_search=optuna", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   "hydra.sweeper.n_jobs=3", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=3",
                   f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
                   f"task.data.train={tiny_ner_data['train']}", f"task.data.validation={tiny_ner_data['validation']}",
                   "trainer.max_steps=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "Directions: ['maximize']" in result.stderr  # NER's F1: ftune_direction follows the task
    summary = json.loads((sweep / "summary.json").read_text())
    assert len(summary["jobs"]) == 3 and summary["failed"] == 0
    assert summary["swept"] == ["optimizer.lr", "trainer.batch_size", "scheduler.warmup_ratio", "optimizer.weight_decay"]
    lrs = [float(job["params"]["optimizer.lr"]) for job in summary["jobs"]]
    assert len(set(lrs)) == 3 and all(1e-5 <= lr <= 1e-3 for lr in lrs)
    for job in summary["jobs"]:  # each trial trained with what Optuna sampled
        saved = (sweep / str(job["job"]) / "config.yaml").read_text()
        assert f"batch_size: {job['params']['trainer.batch_size']}" in saved
    best = summary["jobs"][summary["best_job"]]
    assert summary["optuna"]["best_value"] == best["value"] == max(j["value"] for j in summary["jobs"])
    assert {k: str(v) for k, v in summary["optuna"]["best_params"].items()} == best["params"]


@pytest.mark.slow
def test_slurm_launcher_configs_compose(tmp_path):
    for launcher in ("submitit_slurm", "slurm"):
        shown = ftune("train", f"hydra/launcher={launcher}", "hydra.launcher.partition=gpu", "--cfg", "hydra",
                      cwd=tmp_path).stdout
        assert "SlurmLauncher" in shown and "partition: gpu" in shown
    assert not list(tmp_path.iterdir())


def test_preflight_keeps_null_values_and_reads_optuna_ranges():
    from ftune.config.preflight import preflight
    from ftune.registry import register_configs

    register_configs()
    preflight("train", ["hparams_search=optuna", "hydra.sweeper.sampler.seed=null", "trainer.max_steps=null",
                        "optimizer.lr=tag(log, interval(1e-6, 1e-4))"])  # an Optuna range on the command line
