"""`ftune data check`: read and validate a task's data as `train` would, without loading any model.
`ftune data show`: the first N examples of a split as the model sees them, trained tokens highlighted, and
the counts of trained and masked tokens over the whole split (causal-LM tasks: sft, dpo; tokenizer only)."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from ftune import run as R
from ftune.errors import FtuneError
from ftune.registry import build_task

log = logging.getLogger("ftune")
# (ids, labels) keys of the features whose labels are token ids (-100 where masked)
SEQUENCES = (("input_ids", "labels", ""), ("chosen_ids", "chosen_labels", "chosen"),
             ("rejected_ids", "rejected_labels", "rejected"))


def run(cfg: DictConfig) -> dict:
    """Every split read and checked (file:line errors raise FtuneError → exit 2); returns a summary."""
    if cfg.get("action", "check") not in ("check", "show"):
        raise FtuneError(f"unknown action `{cfg.action}`", where="ftune data", fix="use: ftune data check|show")
    task = build_task(cfg.task)
    splits = R.load_splits(task)
    task.fit_labels(splits["train"], {k: v for k, v in splits.items() if k != "train"})
    if cfg.get("action") == "show":
        return show(cfg, task, splits)
    summary = {"task": task.name, **{split: len(examples) for split, examples in splits.items()},
               "labels": task.labels}
    if task.scheme:
        summary["scheme"] = task.scheme
    sizes = ", ".join(f"{split} {len(examples)}" for split, examples in splits.items())
    labels = f"; {len(task.labels)} labels: {', '.join(task.labels[:20])}" if task.labels else ""
    print(f"data ok: {task.name}: {sizes} examples{labels}", file=sys.stdout)
    return summary


def show(cfg: DictConfig, task, splits: dict[str, list[dict]]) -> dict:
    from rich.console import Console
    from rich.text import Text

    from ftune.data import cache
    from ftune.models import load_tokenizer, locate

    if not cfg.get("model"):
        raise FtuneError("`data show` renders with a model's tokenizer and chat template", where="model",
                         fix="add model=smollm2-135m (or another preset)")
    examples = splits.get(cfg.split) or []
    if not examples:
        raise FtuneError(f"the {cfg.split} split has no examples", where="split", fix="choose train, validation or test")
    tokenizer = load_tokenizer(locate(cfg.model.name_or_path), cfg.model.get("trust_remote_code", False))
    # through the feature cache, as train: parallel, memory-mapped (a large split is no list of features), the
    # same refusals (nothing trained, no end of turn), and an entry that a later `train` loads
    features = cache.featurize(task, examples, tokenizer, cfg.split, source=cache.local_source(task.cfg.data, cfg.split))
    keys = [k for k in SEQUENCES if len(features) and k[1] in features.column_names]
    if not keys:
        raise FtuneError(f"task {task.name} has no token-level loss mask to show", where="task",
                         fix="data show is for the causal-LM tasks (sft, dpo); use ftune data check")
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    plain = console.no_color or not console.is_terminal  # no colours: trained spans are bracketed instead
    console.print(f"{task.name} {cfg.split}: trained tokens {'in ⟦ ⟧' if plain else 'highlighted'}, the others "
                  "are context only")
    trained = masked = 0
    for number, feature in enumerate(features):
        for ids_key, labels_key, side in keys:
            ids, labels = feature[ids_key], feature[labels_key]
            count = sum(label != -100 for label in labels)
            trained, masked = trained + count, masked + len(ids) - count
            if number >= cfg.n:
                continue
            where = examples[feature["example"]].get("where", "")
            console.rule(f"example {feature['example'] + 1}{f' {side}' if side else ''} ({where}): {count} trained, "
                         f"{len(ids) - count} masked tokens", align="left")
            console.print(_highlighted(tokenizer, ids, labels, plain, Text))
    console.print(f"{len(features)} feature(s) from {len(examples)} example(s): {trained} trained tokens, "
                  f"{masked} masked ({100 * trained / max(trained + masked, 1):.1f}% trained)")
    return {"task": task.name, "split": cfg.split, "features": len(features), "trained_tokens": trained,
            "masked_tokens": masked}


def _highlighted(tokenizer, ids: list[int], labels: list[int], plain: bool, text_class):
    text, run, state = text_class(), [], None
    for token, label in [*zip(ids, labels, strict=True), (None, None)]:
        now = None if token is None else label != -100
        if now != state and run:  # a run of trained (or masked) tokens ends: decode it in one piece
            piece = tokenizer.decode(run)
            if plain and state:
                piece = f"⟦{piece}⟧"
            text.append(piece, style="bold black on green" if state and not plain else ("dim" if not plain else ""))
            run = []
        if token is not None:
            run.append(token)
        state = now
    return text
