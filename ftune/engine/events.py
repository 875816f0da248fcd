"""Subscribers to the engine's events: console progress, metrics.jsonl, TensorBoard.

The engine emits plain dicts and knows nothing about where they go:
    {"event": "start", "total_steps", "epochs", "train_examples", ...}
    {"event": "step", "step"}                                     (every step; for progress bars only)
    {"event": "train", "step", "epoch", "loss", "lr", "samples_per_s", "tokens_per_s", "padding_ratio"}
    {"event": "eval", "step", "epoch", "val/f1", ..., "is_best"}
    {"event": "end", "step", "reason"}
    {"event": "resume", "step", "checkpoint", "changed": [{"key", "old", "new"}]}   (ftune.resume)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("ftune")


def _scalars(event: dict) -> dict:
    return {k: v for k, v in event.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class JsonlWriter:
    """metrics.jsonl: one JSON object per log or eval event, appended and flushed as it happens."""

    def __init__(self, path: Path):
        self.handle = open(path, "a", encoding="utf-8")

    def __call__(self, event: dict) -> None:
        if event["event"] in ("train", "eval", "start", "end", "resume"):
            self.handle.write(json.dumps({k: v for k, v in event.items() if not isinstance(v, dict)}) + "\n")
            self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class TensorBoardWriter:
    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            from ftune.errors import FtuneError

            raise FtuneError("logger.tensorboard=true needs the tensorboard package", where="logger.tensorboard",
                             fix="pip install tensorboard, or use logger=default") from error
        self.writer = SummaryWriter(str(folder))

    def __call__(self, event: dict) -> None:
        if event["event"] in ("train", "eval"):
            prefix = "train/" if event["event"] == "train" else ""
            for key, value in _scalars(event).items():
                if key not in ("step", "epoch"):
                    self.writer.add_scalar(prefix + key, value, event["step"])

    def close(self) -> None:
        self.writer.close()


class PlainConsole:
    """Log lines at the log cadence: readable in CI logs and files, no control characters."""

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            log.info("training on %d examples for %d steps (%d epoch(s)), %s, %d process(es)",
                     event["train_examples"], event["total_steps"], event["epochs"], event["precision"],
                     event["processes"])
        elif kind == "train":
            log.info("step %d/%d epoch %.2f loss %.4f lr %.2e %.1f samples/s %.0f tokens/s", event["step"],
                     event["total_steps"], event["epoch"], event["loss"], event["lr"], event["samples_per_s"],
                     event["tokens_per_s"])
        elif kind == "eval":
            shown = " ".join(f"{k} {v:.4f}" for k, v in _scalars(event).items() if "/" in k)
            log.info("eval at step %d: %s%s", event["step"], shown, " (best)" if event.get("is_best") else "")
        elif kind == "end":
            log.info("training stopped at step %d: %s", event["step"], event["reason"])

    def close(self) -> None:
        pass


class RichConsole(PlainConsole):
    """A rich progress bar (loss, lr, samples/s, ETA) on a terminal; eval results as log lines above it."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
        self.task = None

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            self.progress.start()
            self.task = self.progress.add_task("train", total=event["total_steps"], info="",
                                               completed=event.get("initial_step", 0))
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=event["step"])
        elif kind == "train" and self.task is not None:
            info = f"loss {event['loss']:.4f} lr {event['lr']:.2e} {event['samples_per_s']:.1f} samples/s"
            self.progress.update(self.task, completed=event["step"], info=info)
        elif kind in ("eval", "end"):
            super().__call__(event)
            if kind == "end":
                self.close()

    def close(self) -> None:
        self.progress.stop()


def build_subscribers(logger_cfg: Any, run_dir: Path | None) -> list:
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
    if run_dir is not None and logger_cfg.tensorboard:
        subscribers.append(TensorBoardWriter(run_dir / "tensorboard"))
    return subscribers
