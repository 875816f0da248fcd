"""report.html and its PNGs for NER, classification and sft runs and for a sweep: images of the expected
size that are not blank, and a page that loads nothing from outside. The run folders are written here
with the files `ftune train` writes (metrics.jsonl, results.json, config.yaml), so no model trains."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from ftune import report
from tests.conftest import run_cli, write_data

pytest.importorskip("matplotlib")


def _run_dir(folder: Path, task: str, main: str, results: dict, extra_eval: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True)
    rows = [{"event": "start", "total_steps": 40, "initial_step": 0}]
    for step in range(1, 41):
        rows.append({"event": "train", "step": step, "epoch": step / 20, "loss": 2.0 * math.exp(-step / 15) + 0.05 * (step % 3),
                     "lr": 5e-5 * (1 - step / 40), "samples_per_s": 100 + step % 7, "tokens_per_s": 3000.0})
        if step % 10 == 0:
            value = 0.5 + step / 100 if main != "loss" else 2.0 - step / 40
            rows.append({"event": "eval", "step": step, "epoch": step / 20, f"val/{main}": value, "val/loss": 1.5 - step / 80,
                         **{f"val/{k}": step / 50 for k in extra_eval}, "is_best": step == 30})
    write_data(folder / "metrics.jsonl", rows)
    results = {"task": task, "model": "tiny", "main_metric": main, "greater_is_better": main != "loss", "best_step": 30,
               "steps": 40, "precision": "fp32", "peft": "none", "freeze": "none", "train": {"samples_per_s": 104.0}, **results}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "config.yaml").write_text(f"task:\n  name: {task}\nmodel:\n  name: tiny\n  name_or_path: /models/tiny\n"
                                        "optimizer:\n  lr: 5.0e-05\n")
    return folder


NER = {"validation": {"f1": 0.8, "precision": 0.79, "recall": 0.81, "per_type": {
    t: {"precision": 0.8, "recall": 0.7, "f1": f, "support": 10} for t, f in (("PER", 0.9), ("ORG", 0.6), ("LOC", 0.8))}}}
CLASSIFICATION = {"validation": {"accuracy": 0.75, "macro_f1": 0.7, "per_class": {
    "neg": {"precision": 0.7, "recall": 0.8, "f1": 0.75, "support": 20}, "pos": {"precision": 0.8, "recall": 0.7, "f1": 0.74,
                                                                                 "support": 20}},
    "confusion_matrix": {"labels": ["neg", "pos"], "rows": "gold", "columns": "predicted", "matrix": [[16, 4], [6, 14]]}}}
SFT = {"validation": {"loss": 1.2, "perplexity": 3.3, "exact_match": 0.2, "token_f1": 0.4}}


def _check_png(path: Path, size: tuple[int, int] | None = (640, 340)) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        if size:
            assert image.size == size, path.name
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20, f"{path.name} looks blank"  # lines, text, markers


def _check_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") >= 1
    external = re.findall(r"""(?:src|href)\s*=\s*["'](?!data:)[^"']*""", page, flags=re.I)
    assert not external and "<link" not in page and "<script" not in page and "url(" not in page


@pytest.mark.parametrize(("task", "main", "results", "extra", "expected"), [
    ("ner", "f1", NER, ("accuracy",), {"loss", "main_metric", "lr", "throughput", "val_metrics", "per_type"}),
    ("classification", "accuracy", CLASSIFICATION, ("macro_f1",),
     {"loss", "main_metric", "lr", "throughput", "val_metrics", "confusion_validation", "per_type"}),
    ("sft", "loss", SFT, ("exact_match", "token_f1"), {"loss", "main_metric", "lr", "throughput", "val_metrics"}),
])
def test_run_report_per_task(tmp_path, task, main, results, extra, expected):
    run_dir = _run_dir(tmp_path / task, task, main, results, extra)
    page = report.write_run_report(run_dir).read_text()
    pngs = {p.stem: p for p in (run_dir / "report").glob("*.png")}
    assert set(pngs) == expected
    for name, path in pngs.items():
        _check_png(path, None if name.startswith("confusion") else (640, 340))
    _check_self_contained(page)
    assert page.count("<img") == len(expected) and f"val/{main}" in page and "best step" in page


def test_report_of_a_killed_run_draws_the_curves_so_far(tmp_path):
    run_dir = _run_dir(tmp_path / "run", "ner", "f1", NER)
    (run_dir / "results.json").unlink()
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"event": "train", "st')  # the last line of a kill -9 may be cut
    page = report.write_run_report(run_dir).read_text()
    assert "did not finish" in page and (run_dir / "report" / "loss.png").is_file()


def test_sweep_report_compares_the_trials(tmp_path):
    sweep = tmp_path / "sweep"
    jobs = []
    for job, (lr, seed, value) in enumerate(((1e-5, 1, 0.6), (1e-4, 1, 0.8), (1e-3, 2, 0.7))):
        run_dir = _run_dir(sweep / str(job), "ner", "f1", NER)
        jobs.append({"job": job, "run_dir": str(run_dir), "status": "ok", "value": value, "metric": "f1", "error": None,
                     "params": {"optimizer.lr": str(lr), "trainer.seed": str(seed)}, "best": job == 1})
    jobs.append({"job": 3, "run_dir": str(sweep / "3"), "status": "failed", "value": None, "metric": None,
                 "error": "FtuneError: bad", "params": {"optimizer.lr": "1", "trainer.seed": "3"}, "best": False})
    (sweep / "summary.json").write_text(json.dumps({"metric": "f1", "swept": ["optimizer.lr", "trainer.seed"],
                                                    "best_job": 1, "failed": 1, "jobs": jobs}))
    run_cli("report", f"sweep_dir={sweep}")
    page = (sweep / "report.html").read_text()
    _check_self_contained(page)
    assert {p.stem for p in sweep.glob("*.png")} == {"report_param_0", "report_param_1", "report_curves"}
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]  # only the jobs' folders
    for path in sweep.glob("*.png"):
        _check_png(path)
    assert 'class="best"' in page and "failed: FtuneError: bad" in page and "optimizer.lr" in page


def test_report_command_errors_are_one_line(tmp_path, capsys):
    from hydra.core.global_hydra import GlobalHydra

    from ftune import cli

    for args in (["report"], ["report", f"run_dir={tmp_path}"], ["report", f"sweep_dir={tmp_path}"]):
        GlobalHydra.instance().clear()
        with pytest.raises(SystemExit) as stop:
            cli.main(args)
        assert stop.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
