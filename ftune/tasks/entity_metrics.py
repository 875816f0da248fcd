"""Entity-level metrics of token tagging (NER), as seqeval computes them, from counts that evaluation chunks add
up: entities per type in the gold tags, in the predicted ones, and in both (read as IOB2, ts.to_iob2), and
word accuracy. Engine.evaluate feeds a split a chunk at a time, so a large split never holds all predictions."""

from __future__ import annotations

from collections import Counter

import numpy as np

from ftune.tasks import tag_schemes as ts


def new_state() -> dict:
    return {"gold": Counter(), "guess": Counter(), "correct": Counter(), "words": 0, "right": 0}


def add(state: dict, gold_tags: list[str], predicted_tags: list[str]) -> None:
    """Count one sentence's entities and words."""
    from seqeval.metrics.sequence_labeling import get_entities

    gold, guess = ts.to_iob2(gold_tags), ts.to_iob2(predicted_tags)
    state["words"] += len(gold)
    state["right"] += sum(a == b for a, b in zip(gold, guess, strict=True))
    true, found = set(get_entities(gold)), set(get_entities(guess))
    state["gold"].update(kind for kind, _, _ in true)
    state["guess"].update(kind for kind, _, _ in found)
    state["correct"].update(kind for kind, _, _ in true & found)


def final(state: dict) -> dict:
    """Micro precision, recall, F1 over entities, word accuracy, and each type's figures."""
    from seqeval.metrics.v1 import _precision_recall_fscore_support

    kinds = sorted(set(state["gold"]) | set(state["guess"]))
    sums = [np.array([state[key][k] for k in kinds], dtype=np.int64) for key in ("guess", "correct", "gold")]

    def scores(average):  # seqeval's own arithmetic, fed with the counts: identical to its report
        return _precision_recall_fscore_support([["O"]], [["O"]], average=average, zero_division=0,
                                                extract_tp_actual_correct=lambda *_: tuple(sums))

    p, r, f, support = scores(None)
    per_type = {k: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
                for i, k in enumerate(kinds)}
    mp, mr, mf, entities = scores("micro") if kinds else (0.0, 0.0, 0.0, 0)
    return {"precision": float(mp), "recall": float(mr), "f1": float(mf),
            "accuracy": state["right"] / state["words"] if state["words"] else 0.0, "entities": int(entities),
            "per_type": per_type}
