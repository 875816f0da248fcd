"""EWC's diagonal Fisher of an earlier run, computed once on its data and stored in that run's directory
(<run>/continual/fisher.safetensors, with what it was computed from), then reused by every later stage that
starts from the run; and the regulariser terms of `continual.regularizer`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ftune.continual import heads, penalties
from ftune.run_dir import RunDir

log = logging.getLogger("ftune")
FOLDER, FILE = "continual", "fisher.safetensors"


def fisher_path(run: RunDir) -> Path:
    return run.file(FOLDER, FILE)


def earlier_fisher(run: RunDir, folder: Path, data: str, cfg: Any, device: Any) -> dict[str, torch.Tensor]:
    """The run's Fisher on `data` (its training file, or the replay file): read from the run when it was computed
    with the same data and settings, else computed with the run's own model (`folder`) and stored there."""
    from safetensors.torch import load_file, save_file

    path = fisher_path(run)
    meta = {"data": str(Path(data).expanduser().resolve()), "model": str(Path(folder).resolve()),
            "examples": str(cfg.continual.fisher_examples), "batch_size": str(cfg.trainer.batch_size)}
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as stored:
            if (stored.metadata() or {}) == meta:
                log.info("EWC: Fisher of %s reused from %s", run, path)
                return load_file(str(path))
    fisher = compute(run, folder, data, cfg, device)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in fisher.items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    log.info("EWC: Fisher stored in %s (%s)", path, json.dumps({k: meta[k] for k in ("examples", "batch_size")}))
    return fisher


def compute(run: RunDir, folder: Path, data: str, cfg: Any, device: Any) -> dict[str, torch.Tensor]:
    """The Fisher of the earlier run's model, with its own task settings and labels, on `data`."""
    from ftune.data import cache
    from ftune.models import load_tokenizer
    from ftune.registry import build_task

    task = build_task(run.config().task)
    task.labels = heads.saved_labels(json.loads((Path(folder) / "config.json").read_text()))
    examples = list(task.iter_file(data, "continual.replay"))
    task.check_examples(examples, "EWC data")
    tokenizer = load_tokenizer(str(folder))
    features = cache.featurize(task, examples, tokenizer, "ewc", cfg.trainer.cache_features, data,
                               cfg.trainer.featurize_workers)
    model = task.build_model(str(folder))
    return penalties.diagonal_fisher(model, task, features, cfg.trainer.batch_size, device,
                                     cfg.continual.fisher_examples)


def terms(cfg: Any, model: Any, source: Any, old_labels: list[str], labels: list[str], head_kept: bool,
          device: Any) -> list:
    """The regulariser's terms for the engine's `penalties` hook ([] for continual.regularizer=none). Anchored:
    the weights the run starts from; head rows an extension added and a fresh head are not."""
    settings = cfg.continual
    if settings.regularizer == "none":
        return []
    body = getattr(model, "base_model_prefix", "")
    head = {name for name, _ in model.named_parameters() if name.split(".")[0] != body}
    grown = heads.grows(old_labels, labels)
    rows = {name: len(old_labels) for name in heads.output_rows(model, len(labels))} if grown else {}
    anchors = penalties.anchors_of(model, rows, skip=set() if head_kept else head)
    importance = None
    if settings.regularizer == "ewc":
        data = str(settings.replay) if settings.replay else str(source.run.setting("task.data.train"))
        if RunDir(data).is_run:
            data = str(RunDir(data).setting("task.data.train"))
        importance = earlier_fisher(source.run, source.folder, data, cfg, device)
    term = penalties.AnchorPenalty(model, settings.strength, anchors, importance)
    log.info("continual: %s (strength %g) on %d tensors", settings.regularizer, settings.strength, len(term.terms))
    return [term]
