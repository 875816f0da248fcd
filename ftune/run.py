"""Set-up shared by the subcommands, in plain order: run dir → task and data → labels → model → engine."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftune.errors import FtuneError
from ftune.tasks.base import Task

log = logging.getLogger("ftune")
SPLITS = ("train", "validation", "test")


def hydra_output_dir(fallback: str | None) -> Path:
    """The job's output directory (a multirun job's own sub-directory), or `fallback` outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    if not fallback:
        raise FtuneError("run_dir is not set", where="run_dir", fix="pass run_dir=<folder>")
    return Path(fallback)


def check_run_dir(run_dir: Path, resume: Any, overwrite: bool) -> None:
    """Refuse to train into a folder that holds another run, unless resuming or told to overwrite."""
    holds_run = (run_dir / "results.json").exists() or (run_dir / "checkpoints").exists()
    if holds_run and not overwrite and str(resume).lower() in ("false", "none", ""):
        raise FtuneError(f"{run_dir} already holds a run", where="run_dir",
                         fix="pick another run_dir, add resume=true to continue it, or overwrite=true to replace it")


def load_splits(task: Task, names=SPLITS) -> dict[str, list[dict]]:
    splits = {name: task.load_split(name) for name in names}
    for name, examples in splits.items():
        if not examples and task.cfg.data.get(name):  # a configured file that holds nothing is a mistake
            raise FtuneError(f"the {name} split is empty", where=f"task.data.{name}",
                             fix=f"check {task.cfg.data.get(name)}, or leave task.data.{name} unset")
        log.info("%s: %d examples", name, len(examples))
    return splits


def validate_train_config(cfg: DictConfig) -> None:
    """Checks that need no data or weights: fail here, before anything slow happens."""
    from ftune.config import check_values
    from ftune.optim import optimizer_args

    check_values(cfg)  # ranges, choices, plug-in names (the CLI checked them at composition; calls from Python too)
    from ftune.config import constraints

    constraints.check(cfg)  # one setting against another (the step-count ones: commands/train.py, once data is read)
    optimizer_args(cfg.optimizer)
    from ftune import freeze, peft
    from ftune.registry import peft_plugin, task_class

    method = peft_plugin(cfg.peft.name)
    if peft.is_active(cfg.peft) and freeze.is_active(cfg.freeze):
        raise FtuneError(f"peft={cfg.peft.name} already freezes the pretrained weights; freeze={cfg.freeze.name} "
                         "is for full fine-tuning", where="freeze", fix="use freeze=none with a peft method")
    if cfg.optimizer.get("loraplus_lr_ratio") and not method.lora_weights:
        raise FtuneError(f"LoRA+ sets the learning rate of LoRA's B matrices; peft={cfg.peft.name} has none",
                         where="optimizer.loraplus_lr_ratio", fix="use peft=lora, dora or rslora, or leave it null")
    if cfg.trainer.epochs is not None and cfg.trainer.epochs < 1 and not cfg.trainer.max_steps:
        raise FtuneError("train for at least one epoch or set max_steps", where="trainer.epochs")
    from ftune.engine import sharding
    from ftune.models import check_quantization

    sharding.check(cfg.trainer, cfg.model, cfg.peft)
    check_quantization(cfg.model, cfg.peft.name)
    method.validate(cfg.peft)
    task_class(cfg.task.name).validate(cfg.task)  # the task's rules across its keys


def check_model_limits(task_cfg: DictConfig, model_path: str, key: str = "task") -> None:
    """Lengths beyond the model's position embeddings, read from its config.json alone (no weights):
    the model would fail with an index error deep in its forward, or read garbage positions."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path)
    except Exception:  # hub id without the network, GGUF...: the model loader reports those itself
        return
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int):  # T5's relative positions have no such limit
        return
    if "roberta" in config.model_type or config.model_type == "camembert":  # positions start after the pad id
        limit -= (config.pad_token_id or 0) + 1
    for name in ("max_length", "max_source_length"):
        value = task_cfg.get(name)
        if isinstance(value, int) and value > limit:
            raise FtuneError(f"{value} tokens exceed the {limit} positions of {config.model_type} ({model_path})",
                             where=f"{key}.{name}", fix=f"set {key}.{name}={limit} or less")


def load_inference(cfg: DictConfig) -> tuple[Any, Any, Any, DictConfig | None, Path | None, Path]:
    """The old tuple view of `ftune.inference.Inference` (task, tokenizer, model, trainer config or None,
    run dir or None, model folder), kept for callers written against it; new code uses Inference."""
    from ftune.inference import Inference

    loaded = Inference.load(cfg)
    trainer = loaded.settings.trainer if loaded.settings is not None else None
    return loaded.task, loaded.tokenizer, loaded.model, trainer, loaded.run_dir, loaded.folder


def save_hydra_record(run_dir: Path) -> None:
    """What Hydra writes to .hydra/ (config, hydra, overrides), saved only once the run has started."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    folder = run_dir / ".hydra"
    folder.mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), folder / "overrides.yaml")
    (folder / "config.yaml").write_text((run_dir / "config.yaml").read_text())


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    tmp.replace(path)


def check_output_format(value: str) -> None:
    if value not in ("table", "json"):
        raise FtuneError(f"unknown output_format `{value}`", where="output_format", fix="choose from: table, json")


def print_json(data: dict) -> None:
    """output_format=json: the one JSON document on stdout (logs and tables went to stderr)."""
    print(json.dumps(data, default=float), flush=True)


def print_table(task: Task, metrics: dict, title: str, to_stderr: bool = False) -> None:
    """The task's metrics table on stdout, or stderr when stdout carries JSON. rich writes plain text when
    the stream is not a terminal and no colour when NO_COLOR is set."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    columns = task.table_columns
    for column in ("", *columns):
        table.add_column(column, justify="left" if not column else "right")
    for name, *values in task.metrics_table(metrics):
        table.add_row(str(name), *(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values))
    Console(file=sys.stderr if to_stderr else sys.stdout, width=100).print(table)
