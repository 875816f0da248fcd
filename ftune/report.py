"""Pictures of a run and of a sweep: PNGs drawn with matplotlib's Agg backend (no display, no pyplot state)
and one self-contained HTML page, images embedded as data: URIs, no external resource of any kind.

Everything is read back from the run directory (metrics.jsonl, results.json, config.yaml), so
`ftune report run_dir=...` can redraw any run, finished, stopped or killed, and a sweep's report reads
each job's folder through the sweep's summary.json.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

SIZE = (6.4, 3.4)  # inches at DPI: 640 × 340 pixels per plot
DPI = 100
PNG_FOLDER = "report"
CURVES = ("exact_match", "f1", "token_f1", "rougeL", "rouge1", "bleu", "chrf", "accuracy", "macro_f1",
          "micro_f1", "pearson", "spearman", "perplexity")


# ---- reading a run ---------------------------------------------------------------------------------------
def read_run(run_dir: Path) -> dict:
    rows = []
    if (run_dir / "metrics.jsonl").is_file():
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # the last line of a killed run may be cut
                    continue
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
    config: dict = {}
    if (run_dir / "config.yaml").is_file():
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    by_step: dict[str, dict[int, dict]] = {"train": {}, "eval": {}}
    for row in rows:  # a resumed run may repeat steps: the last row of a step wins
        if row.get("event") in by_step:
            by_step[row["event"]][row["step"]] = row
    main = results.get("main_metric") or _main_from_rows(by_step["eval"])
    return {"train": [by_step["train"][s] for s in sorted(by_step["train"])],
            "eval": [by_step["eval"][s] for s in sorted(by_step["eval"])],
            "results": results, "config": config, "main": main,
            "greater": results.get("greater_is_better", True)}


def _main_from_rows(evals: dict) -> str | None:
    keys = [k[4:] for row in evals.values() for k in row if k.startswith("val/") and k != "val/loss"]
    return keys[0] if keys else ("loss" if evals else None)


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    out, last, norm = [], 0.0, 0.0
    for value in values:
        last, norm = weight * last + (1 - weight) * value, weight * norm + (1 - weight)
        out.append(last / norm)
    return out


# ---- drawing ---------------------------------------------------------------------------------------------
def _figure():
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI)
    axes = figure.add_subplot()
    axes.grid(True, alpha=0.3)
    return figure, axes


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=DPI)  # Agg, through matplotlib's canvas for png
    return path


def plot_loss(run: dict, path: Path) -> Path | None:
    steps = [r["step"] for r in run["train"] if isinstance(r.get("loss"), int | float)]
    losses = [r["loss"] for r in run["train"] if isinstance(r.get("loss"), int | float)]
    if not steps:
        return None
    figure, axes = _figure()
    axes.plot(steps, losses, color="tab:blue", alpha=0.35, label="training loss (raw)")
    axes.plot(steps, smooth(losses, 0.6 if len(losses) < 50 else 0.9), color="tab:blue", label="smoothed")
    evals = [(r["step"], r["val/loss"]) for r in run["eval"] if isinstance(r.get("val/loss"), int | float)]
    if evals:
        axes.plot(*zip(*evals, strict=True), "o--", color="tab:orange", label="validation loss")
    axes.set(xlabel="step", ylabel="loss", title="Loss")
    axes.legend(loc="upper right", fontsize=8)
    return _save(figure, path)


def plot_main_metric(run: dict, path: Path) -> Path | None:
    key = f"val/{run['main']}"
    points = [(r["step"], r[key]) for r in run["eval"] if isinstance(r.get(key), int | float)]
    if not points:
        return None
    figure, axes = _figure()
    axes.plot(*zip(*points, strict=True), "o-", color="tab:green", label=key)
    best = run["results"].get("best_step")
    if best is None:
        best = next((r["step"] for r in reversed(run["eval"]) if r.get("is_best")), None)
    values = dict(points)
    if best in values:
        axes.plot([best], [values[best]], marker="*", markersize=16, color="tab:red", linestyle="none",
                  label=f"best: step {best}, {values[best]:.4g}")
        axes.axvline(best, color="tab:red", alpha=0.3)
    axes.set(xlabel="step", ylabel=key, title=f"Validation {run['main']}")
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


def plot_series(run: dict, keys: list[str], title: str, ylabel: str, path: Path, kind: str = "train",
                log_y: bool = False) -> Path | None:
    figure, axes = _figure()
    drawn = 0
    for key in keys:
        points = [(r["step"], r[key]) for r in run[kind] if isinstance(r.get(key), int | float)]
        if points:
            axes.plot(*zip(*points, strict=True), "-" if kind == "train" else "o-", label=key)
            drawn += 1
    if not drawn:
        return None
    if log_y:
        axes.set_yscale("log")
    axes.set(xlabel="step", ylabel=ylabel, title=title)
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


def plot_confusion(matrix: dict, title: str, path: Path) -> Path | None:
    import numpy as np

    labels, counts = matrix.get("labels") or [], np.array(matrix.get("matrix") or [])
    if not labels or counts.size == 0 or len(labels) > 40:
        return None
    from matplotlib.figure import Figure

    side = min(max(3.4, 0.45 * len(labels) + 1.8), 9.0)
    figure = Figure(figsize=(side + 1.2, side), dpi=DPI)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    axes.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="gold", title=title)
    axes.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    axes.set_yticklabels(labels, fontsize=8)
    if len(labels) <= 20:
        top = counts.max() or 1
        for (i, j), value in np.ndenumerate(counts):
            axes.text(j, i, str(value), ha="center", va="center", fontsize=7,
                      color="white" if value > top / 2 else "black")
    return _save(figure, path)


def plot_per_type(results: dict, path: Path) -> Path | None:
    """F1 per entity type (NER) or per class, validation and test side by side."""
    key = next((k for k in ("per_type", "per_class") for split in ("validation", "test")
                if isinstance((results.get(split) or {}).get(k), dict)), None)
    if key is None:
        return None
    splits = [s for s in ("validation", "test") if isinstance((results.get(s) or {}).get(key), dict)]
    names = list(dict.fromkeys(n for s in splits for n in results[s][key]))[:40]
    if not names:
        return None
    figure, axes = _figure()
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        values = [results[split][key].get(n, {}).get("f1", 0.0) for n in names]
        axes.bar([x + i * width for x in range(len(names))], values, width, label=split)
    axes.set_xticks([x + width * (len(splits) - 1) / 2 for x in range(len(names))])
    axes.set_xticklabels(names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                         fontsize=8)
    axes.set(ylabel="F1", ylim=(0, 1.05), title="F1 per entity type" if key == "per_type" else "F1 per class")
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)


def run_plots(run: dict, folder: Path) -> list[tuple[str, Path]]:
    plots: list[tuple[str, Path | None]] = [
        ("Training loss", plot_loss(run, folder / "loss.png")),
        (f"Validation {run['main']}", plot_main_metric(run, folder / "main_metric.png")),
        ("Learning rate", plot_series(run, ["lr"], "Learning rate", "lr", folder / "lr.png")),
        ("Throughput", plot_series(run, ["samples_per_s"], "Training throughput", "samples/s",
                                   folder / "throughput.png")),
    ]
    curves = [f"val/{k}" for k in CURVES if k != run["main"] and any(f"val/{k}" in r for r in run["eval"])]
    if curves:  # QA and sft: exact match / F1 over steps; other tasks: their secondary metrics
        plots.append(("Other validation metrics", plot_series(run, [f"val/{run['main']}", *curves],
                                                              "Validation metrics over steps", "value",
                                                              folder / "val_metrics.png", kind="eval")))
    for split in ("validation", "test"):
        matrix = (run["results"].get(split) or {}).get("confusion_matrix")
        if isinstance(matrix, dict):
            plots.append((f"Confusion matrix ({split})",
                          plot_confusion(matrix, f"Confusion matrix, {split}", folder / f"confusion_{split}.png")))
    plots.append(("Per type", plot_per_type(run["results"], folder / "per_type.png")))
    return [(title, path) for title, path in plots if path is not None]


# ---- HTML ------------------------------------------------------------------------------------------------
STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#555}
img{border:1px solid #eee;max-width:100%}.muted{color:#777;font-size:12px}tr.best td{background:#fff6d5}"""


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return html.escape("" if value is None else str(value))


def table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(f'<tr class="{(classes or [""] * len(rows))[i]}">' + "".join(f"<td>{_cell(v)}</td>" for v in row)
                   + "</tr>" for i, row in enumerate(rows))
    return f"<table>{f'<tr>{head}</tr>' if any(header) else ''}{body}</table>"


def page(title: str, sections: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n")


def _figures(plots: list[tuple[str, Path]]) -> str:
    return '<div class="grid">' + "".join(f"<figure>{_image(p)}<figcaption>{html.escape(t)}</figcaption></figure>"
                                          for t, p in plots) + "</div>"


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _median(values: list) -> float | None:
    numbers = sorted(v for v in values if isinstance(v, int | float))
    return numbers[len(numbers) // 2] if numbers else None


def run_sections(run: dict, plots: list[tuple[str, Path]]) -> list[str]:
    results, config = run["results"], run["config"]
    train = results.get("train") or {}
    overview = [["task", results.get("task") or (config.get("task") or {}).get("name")],
                ["model", (config.get("model") or {}).get("name_or_path")],
                ["peft / freeze", f"{results.get('peft', '')} / {results.get('freeze', '')}"],
                [f"best step (val/{run['main']})", results.get("best_step")], ["steps", results.get("steps")],
                ["precision", results.get("precision")],
                ["train samples/s (this process)", train.get("samples_per_s")],
                ["train samples/s (median of the log)", _median([r.get("samples_per_s") for r in run["train"]])],
                ["train seconds", train.get("seconds")], ["run directory", results.get("run_dir")]]
    if not results:
        overview.append(["status", "no results.json: the run did not finish (curves so far)"])
    sections = ["<h2>Run</h2>" + table(["", ""], overview), "<h2>Curves</h2>" + _figures(plots)]
    splits = [s for s in ("validation", "test") if isinstance(results.get(s), dict)]
    if splits:
        keys = list(dict.fromkeys(k for s in splits for k in _scalars(results[s])))
        sections.append("<h2>Results of best/</h2>" + table(["metric", *splits],
                                                              [[k, *(results[s].get(k) for s in splits)] for k in keys]))
        for key in ("per_type", "per_class"):
            for split in splits:
                rows = results[split].get(key)
                if isinstance(rows, dict) and rows:
                    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
                    sections.append(f"<h2>{split}: {key.replace('_', ' ')}</h2>" +
                                    table(["", *columns], [[n, *(r.get(c) for c in columns)] for n, r in rows.items()]))
    if config:
        from ftune.loggers.base import flatten

        flat = flatten(config, 200)
        sections.append("<h2>Configuration</h2><details><summary class=\"muted\">config.yaml, flattened "
                        f"({len(flat)} keys)</summary>" + table(["key", "value"], [[k, v] for k, v in flat.items()])
                        + "</details>")
    return sections


def write_run_report(run_dir: Path, out: Path | None = None) -> Path:
    """report.html (and the PNGs in report/) of a run directory; returns the HTML file."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    plots = run_plots(run, run_dir / PNG_FOLDER)
    results = run["results"]
    title = f"ftune run: {results.get('task', '?')} / {results.get('model', '?')} ({run_dir.name})"
    return _write(out or run_dir / "report.html", page(title, run_sections(run, plots)))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ---- sweeps ----------------------------------------------------------------------------------------------
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
        folder = Path(job.get("run_dir") or "")
        if not (folder / "metrics.jsonl").is_file():
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


def write_sweep_report(sweep_dir: Path, out: Path | None = None) -> Path:
    """report.html of a sweep folder (from its summary.json): the main metric against each swept
    hyper-parameter, every job's validation curve, the summary table."""
    from ftune.errors import FtuneError

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
