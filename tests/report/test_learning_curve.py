"""Learning curves of a sweep over task.data.max_train (ftune/report/curves.py, issue 29): the mean ± std band
over seeds and the prompted baselines as horizontal lines, from a tiny sweep's files."""

from __future__ import annotations

import json

import pytest

from ftune.report import curves, write_sweep_report


def job(n: int, size: int, seed: int, value: float, objective: str = "standard") -> dict:
    return {"job": n, "status": "ok", "value": value, "metric": "accuracy", "greater_is_better": True,
            "run_dir": None, "error": None, "best": False,
            "params": {"objective": objective, "task.data.max_train": str(size), "trainer.seed": str(seed)}}


@pytest.fixture
def sweep(tmp_path):
    jobs = [job(0, 16, 1, 0.5), job(1, 16, 2, 0.6), job(2, 64, 1, 0.7), job(3, 64, 2, 0.8),
            job(4, 16, 1, 0.75, "setfit"), job(5, 16, 2, 0.75, "setfit")]
    summary = {"metric": "accuracy", "swept": ["objective", "task.data.max_train", "trainer.seed"], "best_job": 3,
               "failed": 0, "jobs": jobs, "settings": []}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "eval_validation.json").write_text(json.dumps(
        {"accuracy": 0.55, "model": "/m/smol", "prompt": {"name": "few_shot", "shots": 4}}))
    (tmp_path / "eval_test.json").write_text(json.dumps({"accuracy": 0.9}))  # not prompted: no line
    return tmp_path, summary


def test_points_are_mean_and_std_over_seeds_per_setting(sweep):
    points = curves.curve_points(sweep[1])
    assert points["objective=standard"] == [(16.0, pytest.approx(0.55), pytest.approx(0.0707, abs=1e-4), 2),
                                            (64.0, pytest.approx(0.75), pytest.approx(0.0707, abs=1e-4), 2)]
    assert points["objective=setfit"] == [(16.0, 0.75, 0.0, 2)]


def test_report_draws_the_band_and_the_baselines(sweep, monkeypatch):
    folder, _ = sweep
    drawn = {}
    from ftune.report import plots

    original = plots._save

    def keep(figure, path):
        drawn[path.name] = figure
        return original(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    page = write_sweep_report(folder)
    assert (folder / "report_learning_curve.png").stat().st_size > 0
    assert "Learning curve" in page.read_text()
    axes = drawn["report_learning_curve.png"].axes[0]
    labels = [line.get_label() for line in axes.get_lines()]
    assert any(label.startswith("4-shot smol: 0.550") for label in labels)  # the prompted baseline
    assert len([label for label in labels if "shot" in label]) == 1  # the unprompted eval_test.json is not one
    assert len(axes.collections) == 2  # one mean ± std band per curve (standard, setfit)
