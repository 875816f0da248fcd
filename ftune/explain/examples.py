"""`ftune report run_dir=... explain=N`: N explained examples of a run's validation split for its report. For a
task that labels a whole sequence (explain_output "labels", one label per example, a gold `label`), the most
confident errors come first, then the most confident correct predictions; for other tasks, the split's first N.
"""

from __future__ import annotations

from typing import Any

from ftune.explain.attribution import Explainer
from ftune.explain.rows import explain_examples

SCAN_BATCH = 64


def explained_examples(explainer: Explainer, split: list[dict], count: int) -> list[dict]:
    """Rows as `ftune explain` prints them, each with `gold` (the example's label) where it has one."""
    examples = [dict(split[i]) for i in range(len(split))]
    chosen = _ranked(explainer, examples)[:count] if explainer.kind == "labels" else list(range(len(examples)))[:count]
    rows = explain_examples(explainer, [examples[i] for i in chosen])
    for row, i in zip(rows, chosen, strict=True):
        if examples[i].get("label") is not None:
            row["gold"] = str(examples[i]["label"])
    return rows


def _ranked(explainer: Explainer, examples: list[dict]) -> list[int]:
    """Example indices: wrong predictions by confidence (highest first), then right ones by confidence."""
    task = explainer.task
    features = task.featurize(examples, explainer.tokenizer)
    predicted: dict[int, tuple[str, float]] = {}
    for first in range(0, len(features), SCAN_BATCH):
        batch = features[first:first + SCAN_BATCH]
        probabilities = explainer.probabilities(batch)
        if probabilities.dim() != 2:  # a label per token (tagging): no single prediction to call wrong
            return list(range(len(examples)))
        scores, best = probabilities.max(-1)
        for feature, score, index in zip(batch, scores.tolist(), best.tolist(), strict=True):
            predicted.setdefault(int(feature["example"]), (task.labels[index], score))

    def key(i: int) -> tuple[Any, ...]:
        label, score = predicted.get(i, (None, 0.0))
        gold = examples[i].get("label")
        wrong = gold is not None and label is not None and str(gold) != label
        return (not wrong, -score, i)

    return sorted(range(len(examples)), key=key)
