"""Structured-config schemas, one dataclass per config group option, registered in Hydra's ConfigStore.

Every group YAML starts with `defaults: [base_<name>]`, so a misspelled key or a wrong type fails at
composition time, naming the key. A default is written once, in the YAML (configs/); the dataclasses say
what may be set and what a value may be (fields are MISSING). Layout:
    fields.py    bounded / choice / registered field helpers
    tasks.py     the task group (one schema per task) and the data settings of each
    groups.py    model, optimizer, scheduler, peft, freeze, trainer, logger, recipe
    commands.py  the primary config of each command (train, eval, predict, ...)
    checks.py    unknown keys and out-of-range values, refused before anything loads
"""

from __future__ import annotations

import functools

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ftune.config.checks import check_known_keys, check_values
from ftune.config.commands import (
    COMMANDS,
    ChatConfig,
    DataCheckConfig,
    EvalConfig,
    ExportConfig,
    PredictConfig,
    PushConfig,
    ReportConfig,
    ServeConfig,
    TrainConfig,
)
from ftune.config.groups import (
    AdaLoraConfig,
    FreezeConfig,
    IA3Config,
    LoggerConfig,
    LoraConfig,
    ModelConfig,
    OptimizerConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    RecipeConfig,
    SchedulerConfig,
    TrainerConfig,
)
from ftune.config.tasks import (
    ClassificationTaskConfig,
    DpoTaskConfig,
    GenerationConfig,
    MultilabelTaskConfig,
    NerTaskConfig,
    PairClassificationTaskConfig,
    QaTaskConfig,
    RegressionTaskConfig,
    RelationTaskConfig,
    Seq2seqTaskConfig,
    SftTaskConfig,
)

__all__ = ["COMMANDS", "AdaLoraConfig", "ChatConfig", "ClassificationTaskConfig", "DataCheckConfig",
           "DpoTaskConfig", "EvalConfig", "ExportConfig", "FreezeConfig", "GenerationConfig", "IA3Config",
           "LoggerConfig", "LoraConfig", "ModelConfig", "MultilabelTaskConfig", "NerTaskConfig", "OptimizerConfig",
           "PairClassificationTaskConfig", "PeftConfig", "PredictConfig", "PrefixTuningConfig",
           "PromptTuningConfig", "PushConfig", "QaTaskConfig", "RecipeConfig", "RegressionTaskConfig",
           "RelationTaskConfig", "ReportConfig", "SchedulerConfig", "Seq2seqTaskConfig", "ServeConfig",
           "SftTaskConfig", "TrainConfig", "TrainerConfig", "check_known_keys", "check_values", "defaults",
           "register_configs"]


def register_configs() -> None:
    """Register every schema so that YAML files can extend `base_<name>`."""
    from ftune.registry import GROUPS, PEFT_METHODS, TASKS

    cs = ConfigStore.instance()
    for command, schema in COMMANDS.items():
        cs.store(name=f"base_{command}", node=schema)
    for group, schema in GROUPS.items():
        cs.store(group=group, name=f"base_{group}", node=schema)
    for name, plugin in TASKS.items():
        cs.store(group="task", name=f"base_{name}", node=plugin.schema)
    for name, plugin in PEFT_METHODS.items():
        if name != "none":
            cs.store(group="peft", name=f"base_{name}", node=plugin.schema)
    # hparams_search/*.yaml: Optuna's direction follows the task (maximize F1, minimize a loss-like metric)
    OmegaConf.register_new_resolver("ftune_direction", _direction, replace=True)


def defaults(group: str, option: str) -> DictConfig:
    """The settings of configs/<group>/<option>.yaml as a training run composes them (e.g. `defaults("task",
    "sft")` for a chat with a plain model folder): the YAML is where the values are, so code that needs a
    group's defaults without a run reads them here rather than writing them a second time."""
    node = _composed(group, option).copy()
    OmegaConf.set_readonly(node, False)
    OmegaConf.set_struct(node, False)  # as a structured config: schema fields typed and fixed, free dicts open
    return node


@functools.cache
def _composed(group: str, option: str) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its search path is already set up
        node = compose("train", overrides=[f"{group}={option}"])[group]
    else:
        with initialize_config_module("ftune.configs", version_base="1.3"):
            node = compose("train", overrides=[f"{group}={option}"])[group]
    OmegaConf.set_readonly(node, True)
    return node


def _direction(task_name: str) -> str:
    from ftune.registry import task_class

    return "maximize" if task_class(task_name).greater_is_better else "minimize"
