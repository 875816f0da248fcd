"""Reading a run for its report: metrics.jsonl's train and eval rows by step (a resumed run's repeated step:
the last row wins), results.json and config.yaml, through RunDir."""

from __future__ import annotations

from pathlib import Path

from ftune.run_dir import RunDir


def read_run(run_dir: Path | RunDir) -> dict:
    """A run's curves and results as the report draws them: train/eval rows by step, results, config, the
    main metric and its direction."""
    run = RunDir.of(run_dir)
    rows = run.metrics()  # the last line of a killed run may be cut: RunDir skips it
    results = run.results()
    config = run.config_dict()
    by_step: dict[str, dict[int, dict]] = {"train": {}, "eval": {}}
    for row in rows:  # a resumed run may repeat steps: the last row of a step wins
        if row.get("event") in by_step:
            by_step[row["event"]][row["step"]] = row
    main = results.get("main_metric") or _main_from_rows(by_step["eval"])
    return {"train": [by_step["train"][s] for s in sorted(by_step["train"])],
            "eval": [by_step["eval"][s] for s in sorted(by_step["eval"])],
            "results": results, "config": config, "main": main, "stress": run.stress_results(),
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
