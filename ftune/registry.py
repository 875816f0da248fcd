"""Every plug-in, registered once: name → (implementation, config schema). The name is also the YAML file stem
(configs/<group>/<name>.yaml) and the value on the command line; the schema (ftune/config/) says what its
config may hold. Implementations are "module:attribute" strings, imported only when built, so composing a
config (and `ftune --help`) never pays for torch, peft, mlflow or wandb.

Adding a plug-in is one module (or function), one entry in its table below, and one YAML."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ftune.config import groups as G
from ftune.config import tasks as T
from ftune.errors import FtuneError, did_you_mean


@dataclass(frozen=True)
class Plugin:
    target: str  # "module:attribute" (for a scheduler: transformers' name of the schedule)
    schema: type | None = None  # dataclass of its config; None: it has no settings of its own

    def load(self) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


# A task: its class, and the schema of configs/task/<name>.yaml (`defaults: [base_<name>]`).
TASKS: dict[str, Plugin] = {
    "ner": Plugin("ftune.tasks.ner:NerTask", T.NerTaskConfig),
    "classification": Plugin("ftune.tasks.classification:ClassificationTask", T.ClassificationTaskConfig),
    "pair_classification": Plugin("ftune.tasks.classification:PairClassificationTask",
                                  T.PairClassificationTaskConfig),
    "regression": Plugin("ftune.tasks.regression:RegressionTask", T.RegressionTaskConfig),
    "multilabel": Plugin("ftune.tasks.multilabel:MultilabelTask", T.MultilabelTaskConfig),
    "qa": Plugin("ftune.tasks.qa:QaTask", T.QaTaskConfig),
    "relation": Plugin("ftune.tasks.relation:RelationTask", T.RelationTaskConfig),
    "seq2seq": Plugin("ftune.tasks.seq2seq:Seq2seqTask", T.Seq2seqTaskConfig),
    "sft": Plugin("ftune.tasks.sft:SftTask", T.SftTaskConfig),
    "dpo": Plugin("ftune.tasks.dpo:DpoTask", T.DpoTaskConfig),
}

# A PEFT method: the function that turns its config into peft's (ftune/peft.py), and its schema.
PEFT_METHODS: dict[str, Plugin] = {
    "none": Plugin("ftune.peft:no_adapter", G.PeftConfig),
    "lora": Plugin("ftune.peft:lora", G.LoraConfig),
    "dora": Plugin("ftune.peft:lora", G.LoraConfig),  # LoRA with use_dora (configs/peft/dora.yaml)
    "rslora": Plugin("ftune.peft:lora", G.LoraConfig),  # LoRA with use_rslora
    "adalora": Plugin("ftune.peft:adalora", G.AdaLoraConfig),
    "ia3": Plugin("ftune.peft:ia3", G.IA3Config),
    "prefix_tuning": Plugin("ftune.peft:prefix_tuning", G.PrefixTuningConfig),
    "prompt_tuning": Plugin("ftune.peft:prompt_tuning", G.PromptTuningConfig),
}

# An optimizer: its class (keyword arguments from optimizer.args, checked against its signature).
OPTIMIZERS: dict[str, Plugin] = {
    "adamw": Plugin("torch.optim:AdamW", G.OptimizerConfig),
    "sgd": Plugin("torch.optim:SGD", G.OptimizerConfig),
    "adafactor": Plugin("transformers.optimization:Adafactor", G.OptimizerConfig),
}

# A learning-rate schedule: transformers.get_scheduler's name for it.
SCHEDULERS: dict[str, Plugin] = {
    "linear": Plugin("linear", G.SchedulerConfig),
    "cosine": Plugin("cosine", G.SchedulerConfig),
    "constant": Plugin("constant_with_warmup", G.SchedulerConfig),
}

# How several processes share the work (ftune/engine/strategy.py); one process runs either unchanged.
STRATEGIES: dict[str, Plugin] = {
    "ddp": Plugin("ftune.engine.strategy:DataParallel"),  # the whole model on each process
    "fsdp": Plugin("ftune.engine.strategy:FullySharded"),  # FSDP2: parameters, gradients, optimizer state sharded
}

# A tracker backend of logger.backends (ftune/loggers/); console and metrics.jsonl are logger.console/jsonl.
# A backend's own settings are the logger.<name> section (its schema: that field of LoggerConfig).
LOGGERS: dict[str, Plugin] = {
    "tensorboard": Plugin("ftune.loggers.tensorboard:TensorBoardLogger"),
    "mlflow": Plugin("ftune.loggers.mlflow:MlflowLogger"),
    "wandb": Plugin("ftune.loggers.wandb:WandbLogger"),
}

# The schema of each training group whose options are YAML files only (no implementation to choose).
GROUPS: dict[str, type] = {
    "model": G.ModelConfig,
    "optimizer": G.OptimizerConfig,
    "scheduler": G.SchedulerConfig,
    "peft": G.PeftConfig,  # the method's own schema comes from PEFT_METHODS
    "freeze": G.FreezeConfig,
    "trainer": G.TrainerConfig,
    "logger": G.LoggerConfig,
}


def lookup(table: dict[str, Plugin], name: str, what: str, key: str) -> Plugin:
    if name not in table:
        hint = did_you_mean(name, table)
        raise FtuneError(f"unknown {what} `{name}`", where=key,
                         fix=f"{hint + ' ' if hint else ''}choose from: {', '.join(sorted(table))}")
    return table[name]


def task_class(name: str) -> type:
    return lookup(TASKS, name, "task", "task.name").load()


def build_task(task_cfg: Any):
    return task_class(task_cfg.name)(task_cfg)
