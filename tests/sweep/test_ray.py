"""Sweeps on Ray: `hydra/launcher=ray` starts a local Ray cluster (no address given) and runs each job as a
Ray task; ftune's sweep summary is written as with the other launchers."""

import json

import pytest

from tests.cli.test_installed import ftune

pytestmark = pytest.mark.slow  # the installed command as a subprocess, and a local Ray cluster

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher (the sweeps extra) is not installed")


def test_two_trials_on_a_local_ray_cluster_write_the_summary(tmp_path, tiny_model_dir, tiny_ner_data):
    sweep = tmp_path / "sweep"
    result = ftune("train", "-m", "hydra/launcher=ray", "optimizer.lr=1e-3,2e-3", f"model.name_or_path={tiny_model_dir}",
                   "model.name=tiny", f"task.data.train={tiny_ner_data['train']}",
                   f"task.data.validation={tiny_ner_data['validation']}", "trainer.max_steps=2", "logger.console=none",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "Ray Launcher is launching 2 jobs" in result.stderr
    assert "validated against ConfigStore schema" not in result.stderr  # our preset shadows the plugin's quietly
    summary = json.loads((sweep / "summary.json").read_text())
    assert [job["status"] for job in summary["jobs"]] == ["ok", "ok"] and summary["swept"] == ["optimizer.lr"]
    assert all(isinstance(job["value"], float) for job in summary["jobs"]) and summary["best_job"] in (0, 1)
    for job in (0, 1):
        assert (sweep / str(job) / "results.json").is_file()
    assert (sweep / "summary.csv").read_text().startswith("job,optimizer.lr,f1,status")


def test_ray_launcher_config_composes(tmp_path):
    shown = ftune("train", "hydra/launcher=ray", "hydra.launcher.ray.init.address=auto", "--cfg", "hydra", cwd=tmp_path).stdout
    assert "RayLauncher" in shown and "address: auto" in shown and "num_cpus: 1" in shown
