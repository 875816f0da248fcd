"""The causal LM a prompted evaluation scores: `model=` a folder, a hub id or a model preset
(configs/model/<name>.yaml, e.g. smollm2-135m), or `run_dir=` a training run of a generating task (an sft run:
its best/ or checkpoint, with its adapter on the base model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ftune.errors import FtuneError


def load(cfg: DictConfig) -> tuple[Any, Any, Path]:
    from transformers import AutoModelForCausalLM

    from ftune import loading, peft
    from ftune.models import load_pretrained, load_tokenizer, locate, preset_source
    from ftune.run_dir import RunDir

    if cfg.run_dir and cfg.model_dir:
        raise FtuneError("both run_dir and model= are given", where="model", fix="pass one of them")
    if cfg.run_dir:
        run = RunDir.of(Path(cfg.run_dir))
        folder = loading.model_source(run, None, cfg.checkpoint or "best")
        base = run.config().model.name_or_path
    elif cfg.model_dir:
        folder, base = Path(locate(preset_source(str(cfg.model_dir)), "model")), None
    else:
        raise FtuneError("no language model to prompt", where="model",
                         fix="pass model=<causal LM folder, hub id or preset such as smollm2-135m>, or run_dir=<sft run>")
    if peft.is_adapter_folder(folder):
        model = load_pretrained(AutoModelForCausalLM, locate(base or peft.base_model_path(folder)))
        model = peft.load_trained(model, folder)
    else:
        model = load_pretrained(AutoModelForCausalLM, str(folder))
    tokenizer = load_tokenizer(str(folder))
    device = _device(cfg.get("device") or "auto")
    return model.to(device).eval(), tokenizer, folder


def _device(device: str):
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def position_limit(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", None) or 2048)
