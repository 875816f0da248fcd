"""A default is written once (ftune/config/fields.py): an option's own values in its YAML, values every option
shares in the schema. No YAML repeats the value it would get anyway, and no option leaves a value unset."""

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from ftune.config import COMMANDS, check_known_keys
from ftune.registry import GROUP_COMMANDS, GROUPS, PEFT_METHODS, TASKS, register_configs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
OPTIONS = [(group, path.stem) for group in [*GROUPS, "task"] for path in sorted((CONFIGS / group).glob("*.yaml"))]
REQUIRED = {"export": {"run_dir", "out"}, "push": {"repo_id"}}  # `???` on purpose: the user must say


def _parent(group: str | None, text: DictConfig) -> DictConfig:
    """What the file's values land on: the schema it extends (`base_<name>`), or the option it extends."""
    from ftune.registry import defaults

    first = str(text.defaults[0])
    if not first.startswith("base_"):
        return defaults(group, first)
    name = first[len("base_"):]
    if group is None:
        return OmegaConf.structured(COMMANDS[name])
    schema = {"task": TASKS.get(name), "peft": PEFT_METHODS.get(name)}.get(group)
    return OmegaConf.structured(schema.schema if schema else GROUPS[group])


def _values_of(text: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(text, [key for key in text if key not in ("defaults", "hydra")])


def _known(node: DictConfig, key: str) -> bool:
    """`key` (dotted) has a value in `node`, not MISSING."""
    *path, last = key.split(".")
    for part in path:
        if part not in node or not isinstance(node[part], DictConfig):
            return False
        node = node[part]
    return last in node and not OmegaConf.is_missing(node, last)


def _leaves(node: DictConfig, prefix: str = ""):
    for key in node:
        value = node._get_node(key)
        if isinstance(value, DictConfig) and len(value) and key not in ("args", "hub_splits", "role_map"):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("group,option", OPTIONS + [(None, name) for name in COMMANDS], ids=lambda v: str(v))
def test_no_yaml_repeats_the_value_it_extends(group, option):
    register_configs()
    path = CONFIGS / (f"{group}/{option}.yaml" if group else f"{option}.yaml")
    text = OmegaConf.load(path)
    parent = _parent(group, text)
    repeated = [f"{key}: {OmegaConf.select(text, key)}" for key in _leaves(_values_of(text))
                if key != "name" and _known(parent, key) and OmegaConf.select(parent, key) == OmegaConf.select(text, key)]
    assert not repeated, f"{path.relative_to(CONFIGS)} repeats what it extends: {repeated}"


@pytest.mark.parametrize("group,option", OPTIONS, ids=lambda v: str(v))
def test_every_option_composes_validates_and_sets_every_value(compose_config, group, option):
    cfg = compose_config(GROUP_COMMANDS.get(group, "train"), [f"{group}={option}"])
    check_known_keys(cfg)
    assert cfg[group] is not None
    assert not OmegaConf.missing_keys(cfg), f"{group}={option} leaves unset: {sorted(OmegaConf.missing_keys(cfg))}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_sets_every_value_but_the_required_ones(compose_config, command):
    cfg = compose_config(command, [])
    assert set(OmegaConf.missing_keys(cfg)) == REQUIRED.get(command, set())


def test_schemas_hold_no_value_an_option_chooses():
    """A schema default is "unset" (null, empty, off) or a value shared by all, never the choice of one option:
    the fields listed here are the shared values, so adding a schema default is a visible decision."""
    import dataclasses
    import sys

    from ftune import registry
    from ftune.config import commands, groups, tasks

    shared = {"length_penalty", "temperature", "top_p", "repetition_penalty", "source"}
    # each task's schemas sit in its own module (ftune/tasks/), registered with it
    task_modules = {sys.modules[plugin.schema.__module__] for plugin in registry.TASKS.values()}
    for module in (commands, groups, tasks, *task_modules):
        for schema in vars(module).values():
            if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
                continue
            for spec in dataclasses.fields(schema):
                default = spec.default
                if default is dataclasses.MISSING or default == "???" or default in (None, False, ""):
                    continue
                assert spec.name in shared, f"{schema.__name__}.{spec.name} = {default!r}: put it in the YAML"
