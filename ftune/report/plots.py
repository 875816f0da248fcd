"""A run's PNGs, drawn with matplotlib's Agg backend (no display, no pyplot state): loss, the main metric with
its best step, learning rate, throughput, other validation curves, confusion matrices, F1 per type/class."""

from __future__ import annotations

from pathlib import Path

from ftune.report.read import smooth

SIZE = (6.4, 3.4)  # inches at DPI: 640 × 340 pixels per plot
DPI = 100
CURVES = ("exact_match", "f1", "token_f1", "rougeL", "rouge1", "bleu", "chrf", "accuracy", "macro_f1",
          "micro_f1", "pearson", "spearman", "perplexity")


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
