"""Name → implementation tables. The YAML file stem, the registry key and the CLI value are one string."""

from __future__ import annotations

import importlib
from typing import Any

from ftune.errors import FtuneError, did_you_mean

# Tasks are imported lazily: `ftune --help` must not pay for torch.
TASKS: dict[str, str] = {
    "ner": "ftune.tasks.ner:NerTask",
    "classification": "ftune.tasks.classification:ClassificationTask",
    "pair_classification": "ftune.tasks.classification:PairClassificationTask",
    "regression": "ftune.tasks.classification:RegressionTask",
    "multilabel": "ftune.tasks.classification:MultilabelTask",
    "qa": "ftune.tasks.qa:QaTask",
    "relation": "ftune.tasks.relation:RelationTask",
    "seq2seq": "ftune.tasks.seq2seq:Seq2seqTask",
    "sft": "ftune.tasks.sft:SftTask",
    "dpo": "ftune.tasks.dpo:DpoTask",
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


def build_task(task_cfg: Any):
    module, _, cls = lookup(TASKS, task_cfg.name, "task", "task.name").partition(":")
    return getattr(importlib.import_module(module), cls)(task_cfg)
