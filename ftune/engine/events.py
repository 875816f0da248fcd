"""The engine's events, and the subscribers that receive them (built from the `logger` config group).

The engine emits plain dicts and knows nothing about where they go (only rank 0 emits):
    {"event": "start", "total_steps", "epochs", "train_examples", "processes", "precision", "initial_step"}
    {"event": "step", "step"}                                     (every step; for progress bars only)
    {"event": "train", "step", "epoch", "loss", "lr", "samples_per_s", "tokens_per_s", "padding_ratio", ...}
    {"event": "eval", "step", "epoch", "val/f1", ..., "is_best"}
    {"event": "save", "kind": "best" | "checkpoint", "step", "path"}
    {"event": "end", "step", "reason"}
    {"event": "resume", "step", "checkpoint", "changed": [{"key", "old", "new"}]}   (ftune.resume)
`ftune train` adds, once results.json, the report and the model card are written:
    {"event": "result", "results": {...results.json...}, "files": [config.yaml, results.json, report.html]}
Subscribers are callables with a close(); the backends live in ftune/loggers/ (one module each).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ftune.loggers import build_trackers
from ftune.loggers.console import PlainConsole, RichConsole
from ftune.loggers.jsonl import JsonlWriter

__all__ = ["PlainConsole", "RichConsole", "JsonlWriter", "build_subscribers"]


def build_subscribers(logger_cfg: Any, run_dir: Path | None, cfg: Any = None) -> list:
    """Console, metrics.jsonl and the trackers of logger.backends. `run_dir` is None on ranks other than 0
    (and for commands that write no run): then only the console is built, so one job is one tracker run."""
    subscribers: list = []
    mode = logger_cfg.console
    if mode == "auto":  # a redrawn bar only on a terminal that wants it (https://no-color.org, TERM=dumb)
        fancy = sys.stderr.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        mode = "rich" if fancy else "plain"
    if mode == "rich":
        subscribers.append(RichConsole())
    elif mode == "plain":
        subscribers.append(PlainConsole())
    if run_dir is not None and logger_cfg.jsonl:
        subscribers.append(JsonlWriter(run_dir / "metrics.jsonl"))
    if run_dir is not None and cfg is not None:
        subscribers.extend(build_trackers(logger_cfg, run_dir, cfg))
    return subscribers
