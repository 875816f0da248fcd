"""Metrics of the sequence-level tasks, computed from plain lists with numpy.

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


def single_label(gold: list[int], predicted: list[int], labels: list[str]) -> dict:
    """Accuracy, macro P/R/F1, per-class rows and the confusion matrix (rows: gold, columns: predicted)."""
    k, n = len(labels), len(gold)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    tp = np.diag(matrix)
    support, guessed = matrix.sum(1), matrix.sum(0)
    p, r, f = _prf(tp, guessed - tp, support - tp)
    return {"accuracy": float(tp.sum() / n) if n else 0.0, **_macro(p, r, f, (support + guessed) > 0),
            "examples": n, "per_class": _per_class(labels, p, r, f, support),
            "confusion_matrix": {"labels": list(labels), "rows": "gold", "columns": "predicted",
                                 "matrix": matrix.tolist()}}


def one_class_f1(gold: list[int], predicted: list[int], positive: int) -> float:
    """F1 of one class against all others (the positive class of a binary task)."""
    g, p = np.asarray(gold) == positive, np.asarray(predicted) == positive
    tp, fp, fn = int((g & p).sum()), int((~g & p).sum()), int((g & ~p).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def multi_label(gold: list[list[int]], predicted: list[list[int]], labels: list[str]) -> dict:
    """Micro and macro P/R/F1 over labels, subset accuracy (all labels of an example right), per-label rows."""
    n, k = len(gold), len(labels)
    g, p = np.zeros((n, k), dtype=bool), np.zeros((n, k), dtype=bool)
    for row, (gold_ids, predicted_ids) in enumerate(zip(gold, predicted, strict=True)):
        g[row, gold_ids], p[row, predicted_ids] = True, True
    tp, fp, fn = (g & p).sum(0), (~g & p).sum(0), (g & ~p).sum(0)
    pc, rc, fc = _prf(tp, fp, fn)
    mp, mr, mf = _prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
    macro = _macro(pc, rc, fc, (g | p).any(0))
    return {"micro_precision": float(mp[0]), "micro_recall": float(mr[0]), "micro_f1": float(mf[0]), **macro,
            "subset_accuracy": float((g == p).all(1).mean()) if n else 0.0, "examples": n,
            "per_class": _per_class(labels, pc, rc, fc, g.sum(0))}


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
