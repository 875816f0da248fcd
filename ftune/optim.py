"""Optimizers and learning-rate schedules from config, with arguments checked before anything runs."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from omegaconf import OmegaConf

from ftune.config.groups import OptimizerConfig, SchedulerConfig
from ftune.errors import FtuneError, did_you_mean
from ftune.registry import OPTIMIZERS, SCHEDULERS, declare, lookup

# An optimizer: its class (keyword arguments from optimizer.args, checked against its signature). Adafactor is
# named by its path: transformers loads only when a run builds it.
declare(OPTIMIZERS, "adamw", torch.optim.AdamW, OptimizerConfig)
declare(OPTIMIZERS, "sgd", torch.optim.SGD, OptimizerConfig)
declare(OPTIMIZERS, "adafactor", "transformers.optimization:Adafactor", OptimizerConfig)
# A learning-rate schedule: transformers.get_scheduler's name for it.
declare(SCHEDULERS, "linear", "linear", SchedulerConfig)
declare(SCHEDULERS, "cosine", "cosine", SchedulerConfig)
declare(SCHEDULERS, "constant", "constant_with_warmup", SchedulerConfig)


def optimizer_args(cfg: Any) -> tuple[type, dict]:
    """The optimizer class and its keyword arguments, bound to its signature (typos fail here, named)."""
    cls = lookup(OPTIMIZERS, cfg.name).target
    if isinstance(cls, str):  # "module:attribute", imported when a run uses it
        module, _, name = cls.partition(":")
        cls = getattr(importlib.import_module(module), name)
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
    """No weight decay on biases and normalisation weights (the usual BERT recipe). With LoRA+
    (`loraplus_lr_ratio`), LoRA's B matrices form their own groups at lr × ratio (as peft's
    create_loraplus_optimizer); the schedulers scale every group's rate by the same factor."""
    cls, args = optimizer_args(cfg)
    ratio = cfg.get("loraplus_lr_ratio")  # > 0 (its schema); .get: runs saved before LoRA+ lack the key
    groups: dict[tuple[bool, bool], list] = {(d, b): [] for d in (True, False) for b in (False, True)}
    for name, param in model.named_parameters():
        if param.requires_grad:
            fast = bool(ratio) and ("lora_B" in name or "lora_embedding_B" in name)
            groups[(not (param.ndim < 2 or "norm" in name.lower()), fast)].append(param)
    if ratio and not any(groups[(d, True)] for d in (True, False)):
        raise FtuneError("LoRA+ needs LoRA weights to train, and this model has none", where="optimizer.loraplus_lr_ratio",
                         fix="use it with peft=lora, dora or rslora, or set it to null")
    groups = [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
               **({"lr": cfg.lr * ratio} if fast else {})}
              for (decay, fast), params in groups.items() if params or not fast]
    if fused and cls is torch.optim.AdamW:
        args.setdefault("fused", True)
    return cls(groups, lr=cfg.lr, **args)


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, total_steps: int):
    from transformers import get_scheduler

    name = lookup(SCHEDULERS, cfg.name).target
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_ratio * total_steps))
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
