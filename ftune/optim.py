"""Optimizers and learning-rate schedules from config, with arguments checked before anything runs."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from omegaconf import OmegaConf

from ftune.errors import FtuneError, did_you_mean
from ftune.registry import SCHEDULERS, lookup


def _optimizer_classes() -> dict[str, type]:
    from transformers.optimization import Adafactor

    return {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "adafactor": Adafactor}


def optimizer_args(cfg: Any) -> tuple[type, dict]:
    """The optimizer class and its keyword arguments, bound to its signature (typos fail here, named)."""
    cls = lookup(_optimizer_classes(), cfg.name, "optimizer", "optimizer.name")
    args = OmegaConf.to_container(cfg.args, resolve=True) if OmegaConf.is_config(cfg.args) else dict(cfg.args)
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
    for key in args:
        if key not in accepted or key in ("lr", "weight_decay"):
            hint = did_you_mean(key, accepted)
            raise FtuneError(f"`{cls.__name__}` takes no argument `{key}`", where=f"optimizer.args.{key}",
                             fix=(hint + " " if hint else "") + "lr and weight_decay are set at optimizer.lr / optimizer.weight_decay")
    return cls, args


def build_optimizer(cfg: Any, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """No weight decay on biases and normalisation weights (the usual BERT recipe)."""
    cls, args = optimizer_args(cfg)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if fused and cls is torch.optim.AdamW:
        args.setdefault("fused", True)
    return cls(groups, lr=cfg.lr, **args)


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, total_steps: int):
    from transformers import get_scheduler

    name = lookup(SCHEDULERS, cfg.name, "scheduler", "scheduler.name")
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_ratio * total_steps))
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
