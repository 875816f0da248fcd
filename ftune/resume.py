"""Resume is exactly the run its config.yaml describes: every setting is compared with the saved one.

A difference is refused, naming each key with its old and new value, unless the key cannot change the result
(console and logger settings, checkpoint cadence, data-loader workers, ...) or the user accepts it by name with
`resume_allow=[optimizer.lr,trainer.max_steps]`. An accepted change takes effect for real (`apply`), and is
written to config.yaml and as a `resume` event in metrics.jsonl by the caller.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftune.errors import FtuneError
from ftune.run_dir import RunDir

log = logging.getLogger("ftune")

# Keys (or prefixes ending in ".") whose value cannot change what the run computes: always accepted.
NO_EFFECT = ("logger.", "trainer.num_workers", "trainer.log_every", "trainer.keep_last", "trainer.save_every",
             "trainer.cache_features", "trainer.featurize_workers", "run_dir", "resume", "resume_allow", "overwrite",
             "output_format", "recipe.")  # the reference recipe only judges the result (ftune/recipes.py)
# Keys that `resume_allow` may accept, because the resumed run can honour them: the optimizer's values are
# written into its state below; the trainer's are read by the engine as it goes (a new epochs/max_steps also
# rebuilds the learning-rate schedule for the new total, continuing at the current step).
CAN_CHANGE = ("optimizer.lr", "optimizer.weight_decay", "trainer.epochs", "trainer.max_steps",
              "trainer.min_epochs", "trainer.min_steps", "trainer.max_epochs",
              "trainer.eval_every", "trainer.patience", "trainer.max_grad_norm", "trainer.nonfinite")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"optimizer.lr": 1e-4, ...}: dotted keys of a resolved config (lists stay values)."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def changes(saved: DictConfig, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, requested value)} for every setting that differs, missing keys included."""
    before, now = flatten(saved), flatten(cfg)
    missing = object()
    return {key: (before.get(key), now.get(key)) for key in sorted(set(before) | set(now))
            if before.get(key, missing) != now.get(key, missing) and not _no_effect(key)}


def check(run_dir: Path | RunDir, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """The accepted changes of this resume; refuses any other difference from the run's config.yaml."""
    run = RunDir.of(run_dir)
    if not run.is_run:
        return {}
    saved = run.config()
    diff = changes(saved, cfg)
    allowed = [str(key) for key in (cfg.get("resume_allow") or [])]
    for key in allowed:
        if key not in CAN_CHANGE:
            raise FtuneError(f"`{key}` cannot change on resume", where="resume_allow",
                             fix=f"resume_allow accepts: {', '.join(CAN_CHANGE)}; for other changes start a new run_dir")
    unsaved = [key for key in diff if diff[key][0] is None and key not in flatten(saved)]
    for key in unsaved:  # a setting newer than the ftune that wrote config.yaml: nothing to compare it with
        log.warning("resume: %s is not in the run's config.yaml (an older ftune); using %s", key, _show(diff.pop(key)[1]))
    refused = {key: values for key, values in diff.items() if key not in allowed}
    if refused:
        shown = "; ".join(f"{key}: {_show(old)} → {_show(new)}" for key, (old, new) in refused.items())
        acceptable = [key for key in refused if key in CAN_CHANGE]
        fix = (f"resume with the saved values, accept with resume_allow=[{','.join(acceptable)}], or start a new run_dir"
               if acceptable else "resume with the saved values, or start a new run_dir")
        raise FtuneError(f"resume would change {len(refused)} setting(s) of the run: {shown}", where="resume", fix=fix)
    for key, (old, new) in diff.items():
        log.warning("resume: %s changed from %s to %s (resume_allow)", key, _show(old), _show(new))
    return diff


def apply(accepted: dict[str, tuple[Any, Any]], optimizer, scheduler) -> None:
    """Make accepted optimizer changes real after the saved optimizer and scheduler state was loaded.

    The scheduler multiplies its base learning rates by a factor of the step, so a new lr scales the base rates
    (every parameter group by the same factor, keeping their ratios); the optimizer's current rate is then set
    from the schedule at the current step, which also honours a schedule rebuilt for a new number of steps.
    """
    if "optimizer.lr" in accepted:
        old, new = accepted["optimizer.lr"]
        factor = float(new) / float(old)
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        for group in optimizer.param_groups:
            group["initial_lr"] = group.get("initial_lr", group["lr"]) * factor
    if "optimizer.weight_decay" in accepted:  # group 0 holds the decayed weights (ftune.optim.build_optimizer)
        optimizer.param_groups[0]["weight_decay"] = float(accepted["optimizer.weight_decay"][1])
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas is not None and accepted:
        rates = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, lambdas, strict=True)]
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        scheduler._last_lr = rates  # what get_last_lr() reports until the next scheduler step


def event(accepted: dict[str, tuple[Any, Any]], step: int, checkpoint: Path) -> dict:
    """The `resume` event for metrics.jsonl: where the run continued and what changed."""
    return {"event": "resume", "step": step, "checkpoint": str(checkpoint),
            "changed": [{"key": key, "old": old, "new": new} for key, (old, new) in accepted.items()]}


def _no_effect(key: str) -> bool:
    return any(key == entry or (entry.endswith(".") and key.startswith(entry)) for entry in NO_EFFECT)


def _show(value: Any) -> str:
    return "(unset)" if value is None else str(value)
