"""Structured-config schemas, one dataclass per config group option, registered in Hydra's ConfigStore by
ftune.registry.register_configs (the registry sits above this package: config/ imports nothing from it).

Every group YAML starts with `defaults: [base_<name>]`, so a misspelled key or a wrong type fails at
composition time, naming the key. A default is written once, in the YAML (configs/); the dataclasses say
what may be set and what a value may be (fields are MISSING). Layout:
    fields.py    bounded / choice / registered field helpers
    tasks.py     the data settings the tasks share (each task's own schema is in its module, ftune/tasks/)
    groups.py    model, optimizer, scheduler, peft, freeze, trainer, logger, recipe
    commands.py  the primary config of each command (train, eval, predict, ...)
    checks.py    unknown keys and out-of-range values, refused before anything loads
    catalog.py   the plug-in names and schemas the checks read, handed down by the registry
    constraints.py  rules between keys (stride vs max_length, warm-up vs steps, cadences), at start-up
    preflight.py the command line's rewrites and the checks before Hydra composes
"""

from __future__ import annotations

from ftune.config.checks import check_known_keys, check_values
from ftune.config.commands import COMMANDS

__all__ = ["COMMANDS", "check_known_keys", "check_values"]
