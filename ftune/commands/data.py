"""`ftune data check`: read and validate a task's data as `train` would, without loading any model."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from ftune import run as R
from ftune.registry import build_task

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    """Every split read and checked (file:line errors raise FtuneError → exit 2); returns a summary."""
    task = build_task(cfg.task)
    splits = R.load_splits(task)
    task.fit_labels(splits["train"], {k: v for k, v in splits.items() if k != "train"})
    summary = {"task": task.name, **{split: len(examples) for split, examples in splits.items()},
               "labels": task.labels}
    if getattr(task, "scheme", None):
        summary["scheme"] = task.scheme
    sizes = ", ".join(f"{split} {len(examples)}" for split, examples in splits.items())
    labels = f"; {len(task.labels)} labels: {', '.join(task.labels[:20])}" if task.labels else ""
    print(f"data ok: {task.name}: {sizes} examples{labels}", file=sys.stdout)
    return summary
