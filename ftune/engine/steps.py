"""How many optimizer steps a run makes, and the start-up line that says what decided it.

`trainer.epochs` set: exactly that many epochs. `trainer.epochs: null` (the default): the step rule decides,
`trainer.min_epochs` epochs raised on a small data set until the run makes `trainer.min_steps` optimizer steps,
never past `trainer.max_epochs` (docs/recipes.md measured why: few steps under-train small data).
`trainer.max_steps` overrides both.
"""

from __future__ import annotations

import math
from typing import Any


def steps_per_epoch(num_features: int, batch_size: int, grad_accum: int, processes: int = 1) -> int:
    return math.ceil(math.ceil(math.ceil(num_features / batch_size) / processes) / grad_accum)


def epochs_for(num_features: int, cfg: Any, processes: int = 1) -> int:
    """trainer.epochs when set; else the step rule: min_epochs, raised until min_steps, up to max_epochs."""
    if cfg.epochs is not None:
        return cfg.epochs
    floor, min_steps, cap = cfg.min_epochs, cfg.get("min_steps"), cfg.get("max_epochs")
    if not min_steps:
        return floor
    needed = math.ceil(min_steps / steps_per_epoch(num_features, cfg.batch_size, cfg.grad_accum, processes))
    return max(floor, min(needed, cap) if cap else needed)


def total_steps(num_features: int, cfg: Any, processes: int = 1) -> int:
    per_epoch = steps_per_epoch(num_features, cfg.batch_size, cfg.grad_accum, processes)
    return cfg.max_steps if cfg.max_steps else per_epoch * epochs_for(num_features, cfg, processes)


def plan(num_features: int, cfg: Any, processes: int = 1) -> str:
    """The start-up line: "3,400 examples: 10 epochs, 1,070 steps (trainer.min_steps=1000 raised
    trainer.min_epochs=3)"; what decided it is named unless trainer.epochs was set."""
    steps, per_epoch = total_steps(num_features, cfg, processes), steps_per_epoch(
        num_features, cfg.batch_size, cfg.grad_accum, processes)
    epochs, why = math.ceil(steps / per_epoch), ""
    if cfg.max_steps:
        why = f" (trainer.max_steps={cfg.max_steps})"
    elif cfg.epochs is None and epochs > cfg.min_epochs:
        capped = math.ceil(cfg.min_steps / per_epoch) > epochs
        why = f" (trainer.min_steps={cfg.min_steps} raised trainer.min_epochs={cfg.min_epochs}" + (
            f"; capped by trainer.max_epochs={cfg.max_epochs})" if capped else ")")
    elif cfg.epochs is None:
        why = " (trainer.min_epochs: the step rule adds none)" if cfg.get("min_steps") else ""
    return f"{num_features:,} examples: {epochs} epoch{'s' * (epochs != 1)}, {steps:,} steps{why}"
