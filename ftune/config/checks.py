"""Checks of a composed config against the schemas, run before any data or weights load: unknown keys
(`+trainer.epochz=3` would do nothing), and values outside a field's range, choices or registry table
(`optimizer.lr=-1` is one line and exit 2, not a traceback from torch)."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from ftune.config import catalog
from ftune.config.commands import COMMANDS, TrainConfig
from ftune.errors import FtuneError, did_you_mean


def command_schema(cfg: DictConfig) -> type:
    """The schema of the command whose config `cfg` is (the first whose keys cover it; train otherwise)."""
    keys = set(cfg.keys())
    return next((s for s in COMMANDS.values() if keys <= set(OmegaConf.structured(s).keys())), TrainConfig)


def group_schemas(cfg: DictConfig) -> dict[str, type]:
    """group → schema for each group present in `cfg`; the task's and the PEFT method's from their registry
    entries, read through config/catalog.py (an unknown name keeps the group's base schema and is refused by `check_values`)."""
    plugins = catalog.get()
    schemas = {group: schema for group, schema in plugins.groups().items() if isinstance(cfg.get(group), DictConfig)}
    if "peft" in schemas and plugins.schema("PEFT_METHODS", cfg.peft.get("name")) is not None:
        schemas["peft"] = plugins.schema("PEFT_METHODS", cfg.peft.name)
    if isinstance(cfg.get("task"), DictConfig) and plugins.schema("TASKS", cfg.task.get("name")) is not None:
        schemas["task"] = plugins.schema("TASKS", cfg.task.name)
    return schemas


def check_known_keys(cfg: DictConfig) -> None:
    schemas = group_schemas(cfg)
    _compare(cfg, OmegaConf.structured(command_schema(cfg)), "", skip=set(schemas))
    for group, schema in schemas.items():
        _compare(cfg[group], OmegaConf.structured(schema), f"{group}.", skip={"args"})


def check_values(cfg: DictConfig) -> None:
    task = cfg.get("task")  # eval & co. may hold only the keys given (task.max_length=32): no name
    if isinstance(task, DictConfig) and "name" in task and not OmegaConf.is_missing(task, "name"):
        _check_registered(task.name, "TASKS", "task.name")
    for prefix, node, schema in _schema_nodes(cfg):
        _check_fields(node, schema, prefix)


def _schema_nodes(cfg: DictConfig) -> Iterator[tuple[str, DictConfig, type]]:
    yield "", cfg, command_schema(cfg)
    for group, schema in group_schemas(cfg).items():
        yield f"{group}.", cfg[group], schema


def _check_fields(node: DictConfig, schema: type, prefix: str) -> None:
    for spec in dataclasses.fields(schema):
        if spec.name not in node or OmegaConf.is_missing(node, spec.name):
            continue
        value = node[spec.name]
        if isinstance(value, DictConfig) and spec.default_factory is not dataclasses.MISSING:
            nested = spec.default_factory()
            if dataclasses.is_dataclass(nested):
                _check_fields(value, type(nested), f"{prefix}{spec.name}.")
            continue
        key = f"{prefix}{spec.name}"
        if "registry" in spec.metadata:
            for name in (value if isinstance(value, ListConfig) else [value]):
                _check_registered(name, spec.metadata["registry"], key)
        if "choices" in spec.metadata and value not in spec.metadata["choices"]:
            options = ", ".join(_show(o) for o in spec.metadata["choices"])
            hint = did_you_mean(str(value), [str(o) for o in spec.metadata["choices"] if o is not None])
            raise FtuneError(f"unknown value `{_show(value)}`", where=key,
                             fix=f"{hint + ' ' if hint else ''}choose from: {options}")
        bounds = {name: limit for name, limit in spec.metadata.get("range", {}).items() if limit is not None}
        if value is not None and not all(_BOUND_TESTS[name](value, limit) for name, limit in bounds.items()):
            allowed = " and ".join(f"{_BOUND_SYMBOLS[name]} {limit:g}" for name, limit in bounds.items())
            raise FtuneError(f"must be {allowed}, got {value}", where=key, fix=f"set {key} to a value {allowed}")


def _check_registered(name: object, table_name: str, key: str) -> None:
    plugins = catalog.get()
    table = plugins.names(table_name)
    if name not in table:
        hint = did_you_mean(str(name), table)
        raise FtuneError(f"unknown {plugins.kind(table_name)} `{_show(name)}`", where=key,
                         fix=f"{hint + ' ' if hint else ''}choose from: {', '.join(table)}")


def _show(value: object) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


_BOUND_TESTS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}
_BOUND_SYMBOLS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _compare(node: DictConfig, schema: DictConfig, prefix: str, skip: set[str]) -> None:
    allowed = list(schema.keys())
    for key in node.keys():
        if key in skip:
            continue
        if key not in allowed:
            hint = did_you_mean(str(key), [str(k) for k in allowed])
            hint = hint.replace("`", f"`{prefix}", 1) if hint else ""
            raise FtuneError(f"unknown config key `{prefix}{key}`",
                             fix=f"{hint + ' ' if hint else ''}allowed keys: {', '.join(map(str, allowed))}")
        value, expected = node._get_node(key), schema._get_node(key)
        structured = isinstance(expected, DictConfig) and OmegaConf.get_type(expected) not in (dict, None)
        if isinstance(value, DictConfig) and structured:  # free dicts: any key
            _compare(value, expected, f"{prefix}{key}.", skip=set())
