"""Console progress: a rich bar on a terminal, plain log lines elsewhere (CI logs, files)."""

from __future__ import annotations

import logging

log = logging.getLogger("ftune")


def _scalars(event: dict) -> dict:
    return {k: v for k, v in event.items() if isinstance(v, int | float) and not isinstance(v, bool)}


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
            shown = " ".join(f"{k.removeprefix('task/')} {v:.4f}" for k, v in _scalars(event).items() if k.startswith("task/"))
            if shown:  # a task's own figures (grpo: rewards, KL, completion length)
                log.info("step %d: %s", event["step"], shown)
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
