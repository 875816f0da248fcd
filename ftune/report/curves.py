"""Learning curves of a sweep over the training-set size (`task.data.max_train=16,64,256 trainer.seed=1,2,3`):
the validation metric against the number of labelled examples, mean ± std over the seeds (a band), one curve
per other swept setting (e.g. objective=standard,setfit), and prompted baselines (`ftune eval ... prompt=...`:
their eval_validation.json) as horizontal lines, so the report shows where fine-tuning overtakes prompting."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

SIZE_KEY = "task.data.max_train"
SEED_KEY = "trainer.seed"


def curve_points(summary: dict) -> dict[str, list[tuple[float, float, float, int]]]:
    """curve label -> [(examples, mean, std, seeds)] sorted by examples, from the finished jobs."""
    groups: dict[str, dict[float, list[float]]] = {}
    for job in summary["jobs"]:
        size = job["params"].get(SIZE_KEY)
        if job.get("status") != "ok" or not isinstance(job.get("value"), int | float) or size in (None, "null"):
            continue
        other = " ".join(f"{k.split('.')[-1]}={v}" for k, v in job["params"].items() if k not in (SIZE_KEY, SEED_KEY))
        groups.setdefault(other or "fine-tuned", {}).setdefault(float(size), []).append(float(job["value"]))
    return {label: [(size, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                    for size, v in sorted(sizes.items())] for label, sizes in groups.items()}


def baselines(files: list[Path], metric: str) -> list[tuple[str, float]]:
    """(label, value) of prompted evaluations' eval_<split>.json files that report `metric`."""
    found = []
    for path in files:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        prompt = data.get("prompt")
        if isinstance(prompt, dict) and isinstance(data.get(metric), int | float):
            model = Path(str(data.get("model", ""))).name[:24]
            found.append((f"{prompt.get('shots', 0)}-shot {model}".strip(), float(data[metric])))
    return found


def find_baselines(sweep_dir: Path, given: list[str] | None) -> list[Path]:
    """The files given (report baselines=[...]), else the prompted eval_*.json files in the sweep folder."""
    if given:
        return [Path(p) for p in given]
    return sorted(sweep_dir.glob("eval_*.json")) + sorted(sweep_dir.glob("baselines/*.json"))


def plot_learning_curve(summary: dict, lines: list[tuple[str, float]], path: Path) -> Path | None:
    from ftune.report.plots import _figure, _save

    curves = curve_points(summary)
    if not curves:
        return None
    metric = summary.get("metric") or "metric"
    figure, axes = _figure()
    for label, points in curves.items():
        x, mean, std = [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]
        line, = axes.plot(x, mean, "o-", label=f"{label} (mean of {max(p[3] for p in points)} seeds)")
        axes.fill_between(x, [m - s for m, s in zip(mean, std, strict=True)],
                          [m + s for m, s in zip(mean, std, strict=True)], color=line.get_color(), alpha=0.2)
    styles = ["--", ":", "-.", (0, (5, 1))]
    for i, (label, value) in enumerate(lines):
        axes.axhline(value, linestyle=styles[i % len(styles)], color="gray", linewidth=1.2, label=f"{label}: {value:.3f}")
    sizes = [p[0] for points in curves.values() for p in points]
    if min(sizes) > 0 and max(sizes) / min(sizes) >= 8:
        axes.set_xscale("log")
        axes.minorticks_off()
    ticks = sorted(set(sizes))
    axes.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    axes.set(xlabel="labelled training examples (task.data.max_train)", ylabel=f"val/{metric}",
             title=f"Learning curve: val/{metric} (mean ± std over seeds)")
    axes.legend(loc="best", fontsize=7)
    return _save(figure, path)
