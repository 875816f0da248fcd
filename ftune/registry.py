"""Every plug-in, registered once, next to its code: name → (implementation, config schema).

The name is also the YAML file stem (configs/<group>/<name>.yaml) and the value on the command line; the
schema (a dataclass) says what its config may hold. A plug-in module registers itself when imported:

    @registry.task("ner", NerTaskConfig)             # a task class (ftune/tasks/*.py)
    @registry.peft_method("adalora", AdaLoraConfig)  # a PEFT method class (ftune/peft_methods.py)
    @registry.reward_function("exact_match")        # a reward of generated text (ftune/tasks/rewards.py)
    registry.declare(OPTIMIZERS, "adamw", torch.optim.AdamW, OptimizerConfig)   # a class defined elsewhere

The tables fill on first read: every module of the `ftune.tasks` and `ftune.loggers` packages and the modules
in _BUILT_IN are imported by name (no import from here upwards), then out-of-tree plug-ins: the modules named
in $FTUNE_PLUGINS (comma-separated) and the `ftune.plugins` entry points of installed packages. Adding a
plug-in is one module and one YAML; nothing here changes."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ftune.config import catalog
from ftune.config import groups as G
from ftune.errors import FtuneError, did_you_mean

PLUGINS_ENV = "FTUNE_PLUGINS"
_PACKAGES = ("ftune.tasks", "ftune.loggers")  # every module in them may register plug-ins
_BUILT_IN = ("ftune.peft_methods", "ftune.optim", "ftune.engine.strategy")


@dataclass(frozen=True)
class Plugin:
    name: str
    target: Any  # the class or function (for a scheduler: transformers' name of the schedule)
    schema: type | None = None  # dataclass of its config; None: it has no settings of its own

    def load(self) -> Any:
        return self.target


class Table(Mapping):
    """One kind of plug-in, name → Plugin; reading it first imports every plug-in module (`discover`)."""

    def __init__(self, kind: str, key: str):
        self.kind, self.key = kind, key  # "task", "task.name": for error messages
        self._entries: dict[str, Plugin] = {}

    def add(self, plugin: Plugin) -> None:
        known = self._entries.get(plugin.name)
        if known is not None and known.target is not plugin.target:
            raise FtuneError(f"two {self.kind}s are registered as `{plugin.name}` ({_origin(known.target)}, "
                             f"{_origin(plugin.target)})", where=self.key, fix="rename one of them")
        self._entries[plugin.name] = plugin

    def __getitem__(self, name: str) -> Plugin:
        discover()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        discover()
        return iter(self._entries)

    def __len__(self) -> int:
        discover()
        return len(self._entries)


TASKS = Table("task", "task.name")
PEFT_METHODS = Table("peft method", "peft.name")
OPTIMIZERS = Table("optimizer", "optimizer.name")
SCHEDULERS = Table("scheduler", "scheduler.name")
STRATEGIES = Table("strategy", "trainer.strategy")  # how several processes share the work
LOGGERS = Table("logger backend", "logger.backends")  # tracker backends; a backend's settings: logger.<name>
REWARDS = Table("reward function", "task.rewards")  # grpo's rewards of a completion (ftune/tasks/rewards.py)
TABLES = {"TASKS": TASKS, "PEFT_METHODS": PEFT_METHODS, "OPTIMIZERS": OPTIMIZERS, "SCHEDULERS": SCHEDULERS,
          "STRATEGIES": STRATEGIES, "LOGGERS": LOGGERS, "REWARDS": REWARDS}

# The schema of each training group whose options are YAML files only (no implementation to choose).
GROUPS: dict[str, type] = {
    "model": G.ModelConfig,
    "optimizer": G.OptimizerConfig,
    "scheduler": G.SchedulerConfig,
    "peft": G.PeftConfig,  # the method's own schema comes from PEFT_METHODS
    "freeze": G.FreezeConfig,
    "trainer": G.TrainerConfig,
    "logger": G.LoggerConfig,
    "objective": G.ObjectiveConfig,  # standard | setfit (ftune/engine/contrastive.py)
    "prompt": G.PromptConfig,  # eval: prompted evaluation of a causal LM (ftune/prompted/)
    "continual": G.ContinualConfig,
}
GROUP_COMMANDS = {"prompt": "eval"}  # the command whose config holds a group, where it is not `train`


def declare(table: Table, name: str, target: Any, schema: type | None = None) -> Any:
    """Register `target` (a class, function or name) as `name` in `table`."""
    table.add(Plugin(name, target, schema))
    return target


def _decorator(table: Table) -> Callable:
    def register(name: str, schema: type | None = None) -> Callable:
        def add(target: Any) -> Any:
            return declare(table, name, target, schema)
        return add
    return register


task = _decorator(TASKS)  # @registry.task("ner", NerTaskConfig) on the task class
peft_method = _decorator(PEFT_METHODS)
logger = _decorator(LOGGERS)
strategy = _decorator(STRATEGIES)
reward_function = _decorator(REWARDS)  # @registry.reward_function("exact_match") on a reward class

_discovered = False
_out_of_tree: set[str] = set()  # plug-in modules of $FTUNE_PLUGINS already imported


def discover() -> None:
    """Import every plug-in module once (by name), so that each registers itself. $FTUNE_PLUGINS is read on
    every call: a module named there later (a test, a notebook) registers on the next read of a table."""
    global _discovered
    if not _discovered:
        _discovered = True  # set first: the modules read the tables while they register
        try:
            for package in _PACKAGES:
                path = importlib.import_module(package).__path__
                for module in sorted(m.name for m in pkgutil.iter_modules(path)):
                    importlib.import_module(f"{package}.{module}")
            for module in _BUILT_IN:
                importlib.import_module(module)
            for entry in importlib.metadata.entry_points(group="ftune.plugins"):
                _import_plugin(entry.value, f"entry point {entry.name}")
        except BaseException:
            _discovered = False  # a failed import is reported again on the next read, not hidden
            raise
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        if module not in _out_of_tree:
            _out_of_tree.add(module)
            _import_plugin(module, f"${PLUGINS_ENV}")


def _import_plugin(module: str, where: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as error:
        _out_of_tree.discard(module)
        raise FtuneError(f"cannot import plug-in module `{module}`: {error}", where=where,
                         fix="install it or put its folder on PYTHONPATH") from error


def _origin(target: Any) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"


def lookup(table: Table, name: str, what: str | None = None, key: str | None = None) -> Plugin:
    if name not in table:
        hint = did_you_mean(name, list(table))
        raise FtuneError(f"unknown {what or table.kind} `{name}`", where=key or table.key,
                         fix=f"{hint + ' ' if hint else ''}choose from: {', '.join(sorted(table))}")
    return table[name]


def task_class(name: str) -> type:
    return lookup(TASKS, name).target


def build_task(task_cfg: Any):
    return task_class(task_cfg.name)(task_cfg)


def peft_plugin(name: str) -> Any:
    """The PEFT method class (ftune/peft_methods.py) of `peft.name`."""
    return lookup(PEFT_METHODS, name).target


class _Catalog:
    """What config/ reads of the registry (names and schemas), handed down so that config/ imports nothing above."""

    def names(self, table: str) -> list[str]:
        return list(TABLES[table])

    def kind(self, table: str) -> str:
        return TABLES[table].kind

    def schema(self, table: str, name: str) -> type | None:
        found = TABLES[table].get(name)
        return found.schema if found is not None else None

    def groups(self) -> dict[str, type]:
        return GROUPS


catalog.install(_Catalog())


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore, so that YAML files can extend `base_<name>`: the commands',
    the groups', and each registered plug-in's (generated from the tables above)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from ftune.config.commands import COMMANDS

    store = ConfigStore.instance()
    for command, schema in COMMANDS.items():
        store.store(name=f"base_{command}", node=schema)
    for group, schema in GROUPS.items():
        store.store(group=group, name=f"base_{group}", node=schema)
    for group, table in (("task", TASKS), ("peft", PEFT_METHODS)):
        for name, plugin in table.items():
            if plugin.schema is not None and plugin.schema is not GROUPS.get(group):
                store.store(group=group, name=f"base_{name}", node=plugin.schema)
    # hparams_search/*.yaml: Optuna's direction follows the task (maximize F1, minimize a loss-like metric)
    OmegaConf.register_new_resolver("ftune_direction", _direction, replace=True)


def defaults(group: str, option: str):
    """The settings of configs/<group>/<option>.yaml as a training run composes them (e.g. `defaults("task",
    "sft")` for a chat with a plain model folder): the YAML is where the values are, so code that needs a
    group's defaults without a run reads them here rather than writing them a second time."""
    from omegaconf import OmegaConf

    node = _composed(group, option).copy()
    OmegaConf.set_readonly(node, False)
    OmegaConf.set_struct(node, False)  # as a structured config: schema fields typed and fixed, free dicts open
    return node


@functools.cache
def _composed(group: str, option: str):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    register_configs()
    command = GROUP_COMMANDS.get(group, "train")
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its search path is already set up
        node = compose(command, overrides=[f"{group}={option}"])[group]
    else:
        with initialize_config_module("ftune.configs", version_base="1.3"):
            node = compose(command, overrides=[f"{group}={option}"])[group]
    OmegaConf.set_readonly(node, True)
    return node


def _direction(task_name: str) -> str:
    return "maximize" if task_class(task_name).greater_is_better else "minimize"
