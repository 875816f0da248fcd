"""Name → implementation tables. The YAML file stem, the registry key and the CLI value are one string."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ftune import config as C
from ftune.errors import FtuneError, did_you_mean


@dataclass(frozen=True)
class Plugin:
    """One registration: the implementation ("module:Class", imported only when built, so `ftune --help` does not
    pay for torch) and the dataclass schema of its config group option (ftune/config.py)."""

    target: str
    schema: type

    def load(self) -> type:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


# A task is one module, one entry here and one configs/task/<name>.yaml (`defaults: [base_<name>]`).
TASKS: dict[str, Plugin] = {
    "ner": Plugin("ftune.tasks.ner:NerTask", C.NerTaskConfig),
    "classification": Plugin("ftune.tasks.classification:ClassificationTask", C.ClassificationTaskConfig),
    "pair_classification": Plugin("ftune.tasks.classification:PairClassificationTask",
                                  C.PairClassificationTaskConfig),
    "regression": Plugin("ftune.tasks.classification:RegressionTask", C.RegressionTaskConfig),
    "multilabel": Plugin("ftune.tasks.classification:MultilabelTask", C.MultilabelTaskConfig),
    "qa": Plugin("ftune.tasks.qa:QaTask", C.QaTaskConfig),
    "relation": Plugin("ftune.tasks.relation:RelationTask", C.RelationTaskConfig),
    "seq2seq": Plugin("ftune.tasks.seq2seq:Seq2seqTask", C.Seq2seqTaskConfig),
    "sft": Plugin("ftune.tasks.sft:SftTask", C.SftTaskConfig),
}

SCHEDULERS: dict[str, str] = {  # transformers.get_scheduler names
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",
}


def lookup(table: dict[str, Any], name: str, what: str, key: str) -> Any:
    if name not in table:
        hint = did_you_mean(name, table)
        raise FtuneError(f"unknown {what} `{name}`", where=key,
                         fix=f"{hint + ' ' if hint else ''}choose from: {', '.join(sorted(table))}")
    return table[name]


def task_class(name: str) -> type:
    return lookup(TASKS, name, "task", "task.name").load()


def build_task(task_cfg: Any):
    return task_class(task_cfg.name)(task_cfg)
