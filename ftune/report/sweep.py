"""report.html of a sweep (from its summary.json): the main metric against each swept hyper-parameter, every
job's validation curve (read from the job's run directory), the summary table."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from ftune.report.page import _figures, _write, page, table
from ftune.report.plots import _figure, _save
from ftune.report.read import read_run
from ftune.run_dir import RunDir


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def plot_param(jobs: list[dict], param: str, metric: str, path: Path) -> Path | None:
    points = [(j["params"].get(param), j["value"]) for j in jobs if isinstance(j.get("value"), int | float)]
    if not points:
        return None
    figure, axes = _figure()
    numbers = [_number(p) for p, _ in points]
    if all(n is not None for n in numbers):
        axes.plot(numbers, [v for _, v in points], "o", color="tab:purple", markersize=8)
        if min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
            axes.set_xscale("log")
    else:
        names = list(dict.fromkeys(str(p) for p, _ in points))
        axes.plot([names.index(str(p)) for p, _ in points], [v for _, v in points], "o", color="tab:purple",
                  markersize=8)
        axes.set_xticks(range(len(names)))
        axes.set_xticklabels(names, fontsize=8)
    best = [j for j in jobs if j.get("best")]
    if best and best[0]["params"].get(param) is not None:
        x = _number(best[0]["params"][param])
        axes.plot([x if x is not None and all(n is not None for n in numbers) else
                   list(dict.fromkeys(str(p) for p, _ in points)).index(str(best[0]["params"][param]))],
                  [best[0]["value"]], marker="*", markersize=16, color="tab:red", linestyle="none", label="best")
        axes.legend(loc="best", fontsize=8)
    axes.set(xlabel=param, ylabel=f"val/{metric}", title=f"val/{metric} against {param}")
    return _save(figure, path)


def plot_sweep_curves(jobs: list[dict], metric: str, path: Path) -> Path | None:
    figure, axes = _figure()
    drawn = 0
    for job in jobs:
        folder = RunDir(job.get("run_dir") or "")
        if not folder.has_metrics:
            continue
        run = read_run(folder)
        points = [(r["step"], r[f"val/{metric}"]) for r in run["eval"] if isinstance(r.get(f"val/{metric}"), int | float)]
        if points:
            label = f"#{job['job']} " + " ".join(f"{k.split('.')[-1]}={v}" for k, v in job["params"].items())
            axes.plot(*zip(*points, strict=True), "o-", linewidth=2.5 if job.get("best") else 1.2, label=label[:50])
            drawn += 1
    if not drawn:
        return None
    axes.set(xlabel="step", ylabel=f"val/{metric}", title=f"Validation {metric} of each job")
    axes.legend(loc="best", fontsize=7)
    return _save(figure, path)


def write_sweep_report(sweep_dir: Path, out: Path | None = None, baselines: list[str] | None = None) -> Path:
    """report.html of a sweep folder (from its summary.json): the main metric against each swept
    hyper-parameter, a learning curve when the training-set size was swept (with the prompted baselines:
    `baselines`, else the prompted eval_*.json files in the folder), every job's validation curve, the summary table."""
    from ftune.errors import FtuneError
    from ftune.report import curves

    sweep_dir = Path(sweep_dir)
    summary_file = sweep_dir / "summary.json"
    if not summary_file.is_file():
        raise FtuneError(f"{sweep_dir} has no summary.json", where="sweep_dir",
                         fix="pass the folder of a finished `ftune train -m` sweep (multirun/<time>)")
    summary = json.loads(summary_file.read_text())
    jobs, metric = summary["jobs"], summary.get("metric") or "metric"
    # files, not a folder: a sweep folder's sub-folders are its jobs (tools and tests list them)
    plots = [(f"val/{metric} against {p}", plot_param(jobs, p, metric, sweep_dir / f"report_param_{i}.png"))
             for i, p in enumerate(summary["swept"])]
    if curves.SIZE_KEY in summary["swept"]:
        lines = curves.baselines(curves.find_baselines(sweep_dir, baselines), metric)
        plots.insert(0, ("Learning curve", curves.plot_learning_curve(summary, lines,
                                                                      sweep_dir / "report_learning_curve.png")))
    plots.append(("Validation curves", plot_sweep_curves(jobs, metric, sweep_dir / "report_curves.png")))
    plots = [(t, p) for t, p in plots if p is not None]
    rows = [[j["job"], *j["params"].values(), j.get("value"), j["status"] if j["status"] == "ok" else
             f"failed: {j.get('error')}", j.get("run_dir")] for j in jobs]
    sections = [f"<p class=\"muted\">{len(jobs)} jobs, {summary.get('failed', 0)} failed; best job: "
                f"{html.escape(str(summary.get('best_job')))} (highlighted)</p>",
                "<h2>Summary</h2>" + table(["job", *summary["swept"], f"val/{metric}", "status", "run directory"],
                                           rows, ["best" if j.get("best") else "" for j in jobs]),
                "<h2>Plots</h2>" + _figures(plots)]
    return _write(out or sweep_dir / "report.html", page(f"ftune sweep: {sweep_dir}", sections))
