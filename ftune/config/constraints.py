"""Constraints between two settings, checked at start-up (issue 26).

Written over config keys, never task names: a rule applies to every task whose section has the keys it
reads. A combination that cannot do what it says is an error (FtuneError: one line, exit 2, raised before
the run directory is written); one that runs as configured but is likely a mistake is a one-line warning.
A rule that belongs to one task alone (DPO's label_smoothing) is checked by that task's own code.

    error    task.stride ≥ task.max_length          context on each side as long as the window itself
    warning  task.stride > task.max_length // 4      windows keep at most a quarter of max_length as context
                                                     on each side (ftune.tasks.ner.plan_windows): the rest is
                                                     ignored (a warning, not an error: the default stride
                                                     with a short max_length still trains as it always did)
    error    scheduler.warmup_steps ≥ total steps    the run would end inside the warm-up: optimizer.lr is
                                                     never reached and the decay never starts
    warning  task.generation.max_new_tokens > what training ever showed the model (max_target_length, or
             max_length for prompt + reply): generations that long were never trained
    warning  trainer.eval_every / save_every > total steps: never evaluated / saved mid-run (only at each
             epoch's end and the last step, which the engine always does)
    warning  batch_size × grad_accum × processes > training features: one optimizer step per epoch, on
             fewer examples than the configured batch

Not a constraint: save_every need not be a multiple of eval_every. The engine writes best/ at each
evaluation itself, and early stopping saves a checkpoint when it stops (ftune.engine.loop).
"""

from __future__ import annotations

import logging
from typing import Any

from ftune.errors import FtuneError

log = logging.getLogger("ftune")


def check(cfg: Any) -> None:
    """The constraints that need only the configuration (before any data or weights are read)."""
    task = cfg.task
    stride, length = task.get("stride"), task.get("max_length")
    if isinstance(stride, int) and isinstance(length, int) and stride >= length:
        raise FtuneError(f"{stride} tokens of context on each side do not fit windows of task.max_length={length}",
                         where="task.stride", fix=f"set task.stride={length // 4} or less, or raise task.max_length "
                                                  f"to {4 * stride}")
    if isinstance(stride, int) and isinstance(length, int) and stride > length // 4:
        log.warning("task.stride=%d is cut to %d: windows of task.max_length=%d keep at most a quarter as context "
                    "on each side", stride, length // 4, length)
    generation = task.get("generation")
    new_tokens = generation.get("max_new_tokens") if generation is not None else None
    trained = next(((key, task.get(key)) for key in ("max_target_length", "max_length")
                    if isinstance(task.get(key), int)), None)
    if isinstance(new_tokens, int) and trained is not None and new_tokens > trained[1]:
        log.warning("task.generation.max_new_tokens=%d is longer than any training target (task.%s=%d): "
                    "generations that long were never trained", new_tokens, *trained)


def check_steps(cfg: Any, total: int, features: int, processes: int = 1) -> None:
    """The constraints that need the number of optimizer steps (known once the training data is read)."""
    trainer, warmup = cfg.trainer, cfg.scheduler.get("warmup_steps") or 0
    if warmup >= total:
        raise FtuneError(f"{warmup} warm-up steps do not fit a run of {total} steps: the learning rate would "
                         f"never reach optimizer.lr", where="scheduler.warmup_steps",
                         fix=f"set scheduler.warmup_steps below {total}, or use scheduler.warmup_ratio")
    for key, what in (("eval_every", "evaluated"), ("save_every", "saved")):
        every = trainer.get(key)
        if every and every > total:
            log.warning("trainer.%s=%d is more than the run's %d steps: never %s mid-run, only at each epoch's "
                        "end", key, every, total, what)
    batch = trainer.batch_size * trainer.grad_accum * processes
    if batch > features:
        log.warning("one optimizer step holds %d examples (trainer.batch_size=%d × grad_accum=%d × %d processes) "
                    "but training has %d features: one step per epoch, on fewer examples than configured", batch,
                    trainer.batch_size, trainer.grad_accum, processes, features)
