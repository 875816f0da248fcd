"""Partial fine-tuning without adapters: freeze the embeddings, the bottom N layers, or all but the head
(linear probe) or all but the biases and the head (BitFit). The config group `freeze` selects it.

The "head" is every parameter outside the pretrained body (`model.base_model_prefix`, e.g. `bert.`): the
weights the task adds (classifier, qa_outputs, ...), which are always trained.
"""

from __future__ import annotations

from typing import Any

import torch

from ftune.errors import FtuneError


def is_active(cfg: Any) -> bool:
    return bool(cfg.embeddings or cfg.bottom_layers or cfg.train_only)


def apply(model: torch.nn.Module, cfg: Any) -> None:
    """Set requires_grad as configured; the frozen weights are never passed to the optimizer."""
    if not is_active(cfg):
        return
    body = _body(model)
    prefix = model.base_model_prefix + "."
    if cfg.train_only not in (None, "head", "bias"):
        raise FtuneError(f"unknown value `{cfg.train_only}`", where="freeze.train_only", fix="choose from: null, head, bias")
    for name, param in model.named_parameters():
        in_head = not name.startswith(prefix)
        if cfg.train_only == "head":
            param.requires_grad_(in_head)
        elif cfg.train_only == "bias":
            param.requires_grad_(in_head or name.endswith("bias"))
    if cfg.embeddings:
        for module in embedding_modules(body):
            module.requires_grad_(False)
    if cfg.bottom_layers:
        layers = transformer_layers(model)
        if cfg.bottom_layers > len(layers):
            raise FtuneError(f"the model has {len(layers)} layers, cannot freeze {cfg.bottom_layers}",
                             where="freeze.bottom_layers", fix=f"use a number from 0 to {len(layers)}")
        for layer in layers[: cfg.bottom_layers]:
            layer.requires_grad_(False)


def _body(model: torch.nn.Module) -> torch.nn.Module:
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if not isinstance(body, torch.nn.Module):
        raise FtuneError(f"cannot tell the pretrained body of {type(model).__name__} from its head", where="freeze",
                         fix="use freeze=none with this model")
    return body


def embedding_modules(body: torch.nn.Module) -> list[torch.nn.Module]:
    """BERT-style bodies group their embeddings in `.embeddings`; GPT-2 has wte/wpe, Llama embed_tokens."""
    if isinstance(getattr(body, "embeddings", None), torch.nn.Module):
        return [body.embeddings]
    modules = [body.get_input_embeddings()]
    modules += [m for name, m in body.named_children() if name in ("wpe", "embed_positions")]
    return modules


def transformer_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of layers, bottom first: the first ModuleList as long as the model's layer count
    (encoder.layer in BERT, transformer.layer in DistilBERT, h in GPT-2, layers in Llama)."""
    config = model.config
    count = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    for _, module in _body(model).named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise FtuneError(f"cannot find the layer stack of {type(model).__name__}", where="freeze.bottom_layers",
                     fix="use freeze=embeddings or freeze=none with this model")


def parameter_counts(model: torch.nn.Module) -> dict:
    """Trainable and total parameters. peft keeps an untouched copy of each module it trains in full
    (the head); that copy is not part of the model that runs, so it is not counted."""
    trainable = total = 0
    for name, param in model.named_parameters():
        if ".original_module." in name:
            continue
        # a 4-bit weight is stored packed, two values a byte: count the weights it stands for
        shape = getattr(getattr(param, "quant_state", None), "shape", None)
        count = shape.numel() if isinstance(shape, torch.Size) else param.numel()
        total += count
        trainable += count if param.requires_grad else 0
    return {"trainable": trainable, "total": total, "percent": round(100 * trainable / max(total, 1), 4)}
