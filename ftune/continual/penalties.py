"""Regularisers towards the starting weights, as terms of the objective the engine adds once per optimizer step
(its generic `penalties` hook: callables returning a scalar tensor; the engine back-propagates their sum next to the
data loss, which it has already normalised over the step's targets).

    L2-SP (Li et al., 2018):  strength/2 · Σ (w − w₀)²
    EWC (Kirkpatrick et al., 2017):  strength/2 · Σ F · (w − w₀)²

w₀ are the weights the run starts from (init_from's, or the pretrained model's). Rows of the head that a label-set
extension added are not anchored (they have no earlier value); a head the run initialises fresh is not either.
F is the diagonal empirical Fisher of the earlier model on its own data: the mean over mini-batches of the squared
gradient of the batch's mean loss, scaled to mean 1 over all weights, so that `strength` means the same for both.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger("ftune")


class AnchorPenalty:
    """strength/2 · Σ_p Σ_rows F_p (w_p − w₀_p)² over the parameters in `anchors` (name → w₀, which may cover only
    the first rows of the parameter); `importance` (name → F, same shape as w₀) None for L2-SP."""

    def __init__(self, model: torch.nn.Module, strength: float, anchors: dict[str, torch.Tensor],
                 importance: dict[str, torch.Tensor] | None = None):
        params = dict(model.named_parameters())
        self.strength = strength
        self.terms = []
        for name, anchor in anchors.items():
            param = params.get(name)
            if param is None or not param.requires_grad:
                continue
            weight = importance.get(name) if importance is not None else None
            if importance is not None and weight is None:
                continue
            rows = anchor.shape[0] if anchor.dim() else None
            anchor = anchor.to(param.device, torch.float32)
            weight = weight.to(param.device, torch.float32) if weight is not None else None
            self.terms.append((param, rows if param.dim() and rows != param.shape[0] else None, anchor, weight))

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.terms[0][0].device if self.terms else "cpu")
        if self.terms and self.terms[0][2].device != self.terms[0][0].device:  # the model moved to its device
            self.terms = [(p, r, a.to(p.device), w.to(p.device) if w is not None else None)
                          for p, r, a, w in self.terms]
        for param, rows, anchor, weight in self.terms:
            current = param[:rows] if rows is not None else param
            delta = (current.float() - anchor) ** 2
            total = total + (delta * weight).sum() if weight is not None else total + delta.sum()
        return 0.5 * self.strength * total


def anchors_of(model: torch.nn.Module, rows: dict[str, int], skip: set[str]) -> dict[str, torch.Tensor]:
    """The starting weights w₀ of every trainable parameter: a copy, whole or its first `rows[name]` rows;
    the parameters in `skip` (a fresh head) left out."""
    found = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or name in skip:
            continue
        value = param.detach()
        found[name] = (value[:rows[name]] if name in rows else value).clone()
    return found


def diagonal_fisher(model: torch.nn.Module, task: Any, features: Any, batch_size: int, device: Any,
                    max_examples: int) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher of `model` on (at most `max_examples` of) `features`, scaled to mean 1:
    mean over mini-batches of grad(mean batch loss)², computed in eval mode (no dropout), on every trainable weight."""
    from ftune.data.batching import rows

    count = min(len(features), max_examples)
    model.to(device)
    was_training = model.training
    model.eval()
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    batches = 0
    for start in range(0, count, batch_size):
        batch = task.collate(rows(features, list(range(start, min(start + batch_size, count)))))
        batch = {**batch, "inputs": {k: v.to(device) for k, v in batch["inputs"].items()},
                 "targets": {k: v.to(device) for k, v in batch.get("targets", {}).items()}}
        model.zero_grad(set_to_none=True)
        _, loss_sum, targets = task.forward(model, batch)
        if float(targets) == 0:
            continue
        (loss_sum / targets).backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach().float() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    total = sum(float(f.sum()) for f in fisher.values())
    size = sum(f.numel() for f in fisher.values())
    scale = size / total if total > 0 else 1.0
    log.info("EWC: diagonal Fisher from %d batches of %d earlier examples", batches, count)
    return {name: (f * scale).cpu() for name, f in fisher.items()}
