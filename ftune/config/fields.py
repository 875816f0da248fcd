"""Field helpers of the schemas.

A default is written once. A value an option chooses is in its YAML (configs/<group>/<option>.yaml), and the
schema field is MISSING; a value every option of the group shares (mostly "unset": null, empty, off) is the
schema's default, and no YAML repeats it (tests/config/test_compose.py checks both). `check_values`
(ftune/config/checks.py) refuses a value outside a field's range, choices or registry table."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from omegaconf import MISSING


def bounded(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None):
    """A numeric field with its meaningful range (null passes)."""
    return field(default=default, metadata={"range": {"ge": ge, "gt": gt, "le": le, "lt": lt}})


def choice(*options: Any, default: Any = MISSING):
    """A field whose value must be one of `options` (None among them: null is allowed)."""
    return field(default=default, metadata={"choices": tuple(options)})


def registered(table: str, default: Any = MISSING):
    """A field naming a plug-in: one of the names of `ftune.registry.<table>`, looked up when checked, so
    adding a plug-in is one registry entry, never an edit here. A list field: each element."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"registry": table})
    return field(default=default, metadata={"registry": table})


def section(schema: type):
    """A nested settings block (its own dataclass), e.g. `task.data` or `task.generation`."""
    return field(default_factory=schema)


def empty(kind: type = dict):
    """An empty dict or list by default (a dataclass default must be a fresh one per instance)."""
    return field(default_factory=kind)
