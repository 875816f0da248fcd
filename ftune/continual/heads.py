"""Label-set extension: a classification head grown to the union of the old and new labels.

The old labels keep their ids (in their order first, the new labels after them), the old rows of the head's
output layer are copied bit for bit from the earlier model, and the new rows keep the fresh initialisation the
task's model was built with (transformers' normal(0, initializer_range) weights, zero bias). Before any step the
logits of the old labels are the earlier model's (up to the matrix product's rounding), so its predictions among
the old labels are unchanged.
"""

from __future__ import annotations

from typing import Any

from ftune.errors import FtuneError


def union_labels(old: list[str], new: list[str]) -> list[str]:
    """The old labels in their order, then the new ones (in the order the task gave them)."""
    known = set(old)
    return [*old, *[label for label in new if label not in known]]


def grows(old: list[str], labels: list[str]) -> bool:
    """`labels` extends `old`: the old labels first, in their order, and at least one more."""
    return len(labels) > len(old) > 0 and labels[:len(old)] == old


def grown_state(target: dict, state: dict, old: list[str], labels: list[str], body: set[str]) -> dict:
    """Head tensors for `load_state_dict`: where the source has the head's tensor with the old labels' rows
    (first dimension len(old), the new model's len(labels)), the old rows copied into the fresh tensor; other head
    tensors of equal shape (a dense layer before the output layer) taken whole."""
    chosen = {}
    for key, fresh in target.items():
        if key in body or key not in state:
            continue
        source = state[key]
        if tuple(source.shape) == tuple(fresh.shape):
            chosen[key] = source
        elif source.dim() >= 1 and source.shape[0] == len(old) and fresh.shape[0] == len(labels) \
                and tuple(source.shape[1:]) == tuple(fresh.shape[1:]):
            grown = fresh.detach().clone()
            grown[:len(old)] = source.to(grown.dtype)
            chosen[key] = grown
        else:
            raise FtuneError(f"the head tensor {key} is {tuple(source.shape)} in the earlier model, "
                             f"{tuple(fresh.shape)} here", where="init_from",
                             fix="start from a run of the same task and model")
    return chosen


def output_rows(model: Any, size: int) -> dict[str, int]:
    """name → rows of each parameter outside the pretrained body whose first dimension is the `size` labels:
    the head's output layer (its weight and bias)."""
    body = getattr(model, "base_model_prefix", "")
    return {name: size for name, p in model.named_parameters()
            if name.split(".")[0] != body and p.dim() >= 1 and p.shape[0] == size}


def saved_labels(config: dict) -> list[str]:
    """The label list of a model's config.json (its id2label in id order)."""
    id2label = config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]
