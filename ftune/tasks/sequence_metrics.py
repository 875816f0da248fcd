"""Metrics of the sequence-level tasks, computed with numpy from counts that evaluation chunks add up.

Conventions: precision, recall and F1 of a class with nothing to count are 0 (scikit-learn's
`zero_division=0`), and F1 = 2·TP / (2·TP + FP + FN). Macro averages cover the labels that occur in the
gold labels or in the predictions of the split (for single-label classification this is scikit-learn's
default; for multi-label it differs from scikit-learn only in leaving out labels that a split neither
contains nor predicts, which would otherwise count as F1 = 0).
"""

from __future__ import annotations

import numpy as np


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def ratio(top, bottom):
        return np.divide(top, bottom, out=np.zeros(len(top)), where=bottom > 0)

    return ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(2 * tp, 2 * tp + fp + fn)


def _per_class(labels: list[str], p, r, f, support) -> dict[str, dict]:
    return {label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, label in enumerate(labels)}


def _macro(p, r, f, present: np.ndarray) -> dict[str, float]:
    if not present.any():
        return {"macro_precision": 0.0, "macro_recall": 0.0, "macro_f1": 0.0}
    return {"macro_precision": float(p[present].mean()), "macro_recall": float(r[present].mean()),
            "macro_f1": float(f[present].mean())}


def confusion(gold, predicted, k: int) -> np.ndarray:
    """The k×k confusion counts of label ids (rows: gold, columns: predicted)."""
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def single_label(gold: list[int], predicted: list[int], labels: list[str]) -> dict:
    """Accuracy, macro P/R/F1, per-class rows and the confusion matrix (rows: gold, columns: predicted)."""
    return from_confusion(confusion(gold, predicted, len(labels)), labels)


def from_confusion(matrix: np.ndarray, labels: list[str]) -> dict:
    """single_label's metrics from confusion counts (summed over evaluation chunks: the same integers)."""
    n = int(matrix.sum())
    tp = np.diag(matrix)
    support, guessed = matrix.sum(1), matrix.sum(0)
    p, r, f = _prf(tp, guessed - tp, support - tp)
    return {"accuracy": float(tp.sum() / n) if n else 0.0, **_macro(p, r, f, (support + guessed) > 0),
            "examples": n, "per_class": _per_class(labels, p, r, f, support),
            "confusion_matrix": {"labels": list(labels), "rows": "gold", "columns": "predicted",
                                 "matrix": matrix.tolist()}}


def one_class_f1(gold: list[int], predicted: list[int], positive: int) -> float:
    """F1 of one class against all others (the positive class of a binary task)."""
    return one_class_f1_of(confusion(gold, predicted, max([positive, *gold, *predicted]) + 1), positive)


def one_class_f1_of(matrix: np.ndarray, positive: int) -> float:
    tp = int(matrix[positive, positive])
    fp, fn = int(matrix[:, positive].sum()) - tp, int(matrix[positive].sum()) - tp
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def multi_label(gold: list[list[int]], predicted: list[list[int]], labels: list[str]) -> dict:
    """Micro and macro P/R/F1 over labels, subset accuracy (all labels of an example right), per-label rows."""
    return from_label_counts(label_counts(gold, predicted, len(labels)), labels)


def label_counts(gold: list[list[int]], predicted: list[list[int]], k: int, into: dict | None = None) -> dict:
    """Per-label counts of multi-label predictions (tp, fp, fn, gold support, whether a label occurred) and
    the examples and exactly right examples, added to `into` (the counts of earlier evaluation chunks)."""
    n = len(gold)
    g, p = np.zeros((n, k), dtype=bool), np.zeros((n, k), dtype=bool)
    for row, (gold_ids, predicted_ids) in enumerate(zip(gold, predicted, strict=True)):
        g[row, gold_ids], p[row, predicted_ids] = True, True
    counts = {"tp": (g & p).sum(0), "fp": (~g & p).sum(0), "fn": (g & ~p).sum(0), "support": g.sum(0),
              "present": (g | p).any(0), "examples": n, "exact": int((g == p).all(1).sum())}
    if into is None:
        return counts
    for key, value in counts.items():
        into[key] = into[key] | value if key == "present" else into[key] + value
    return into


def from_label_counts(counts: dict, labels: list[str]) -> dict:
    tp, fp, fn, n = counts["tp"], counts["fp"], counts["fn"], counts["examples"]
    pc, rc, fc = _prf(tp, fp, fn)
    mp, mr, mf = _prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
    macro = _macro(pc, rc, fc, counts["present"])
    return {"micro_precision": float(mp[0]), "micro_recall": float(mr[0]), "micro_f1": float(mf[0]), **macro,
            # exact / n: the same correctly rounded quotient as the mean of the per-example booleans
            "subset_accuracy": counts["exact"] / n if n else 0.0, "examples": n,
            "per_class": _per_class(labels, pc, rc, fc, counts["support"])}


def average_ranks(values) -> np.ndarray:
    """1-based ranks with ties given their average rank (as scipy.stats.rankdata)."""
    _, inverse, counts = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def pearson(x, y) -> float:
    """Pearson's r; 0.0 when either side is constant (undefined there, and NaN would break best-model choice)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if len(x) > 1 and denominator > 0 else 0.0


def regression(gold: list[float], predicted: list[float]) -> dict:
    """Pearson and Spearman correlation and mean squared error."""
    g, p = np.asarray(gold, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    return {"pearson": pearson(g, p), "spearman": pearson(average_ranks(g), average_ranks(p)) if len(g) else 0.0,
            "mse": float(((g - p) ** 2).mean()) if len(g) else 0.0, "examples": len(g)}
