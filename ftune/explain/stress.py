"""`ftune stress`: a run's metric on its evaluation split, clean and under each perturbation of perturb.py
(each seed drawn once), with the change from clean and the share of predictions that flip. A flip compares
the prediction of an example with its clean one: the label (classification), the labels (multi-label), the
sequence of predicted entity types (tagging: entity texts change under swaps, so they are not compared).
The split's files are only read; perturbed examples live in memory.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from ftune.errors import FtuneError, did_you_mean
from ftune.explain import perturb


def evaluate(inference: Any, examples: list[dict]) -> tuple[dict, list[dict]]:
    """(metrics, per-example prediction rows) in one model pass over in-memory examples."""
    task = inference.task
    features = task.featurize(examples, inference.tokenizer)
    predictions, _ = inference.engine.infer(features, inference.batch_size)
    return task.compute_metrics(predictions, features, examples), task.format_predictions(predictions, features,
                                                                                           examples)


def verdict(row: dict) -> Any:
    if "entities" in row:
        return tuple(e["type"] for e in row["entities"])
    for key in ("label", "labels"):
        if key in row:
            return str(row[key])
    return str({k: v for k, v in row.items() if k not in ("text", "text_pair", "tokens")})


def plan(settings: Any, shape: str) -> list[tuple[str, str, dict]]:
    """(row name, perturbation, its keyword arguments) for the perturbations asked that apply to `shape`."""
    rows = []
    for name in settings.perturbations:
        if name not in perturb.NAMES:
            raise FtuneError(f"unknown perturbation `{name}`", where="stress.perturbations",
                             fix=did_you_mean(name, perturb.NAMES) or f"choose from: {', '.join(perturb.NAMES)}")
        if name not in perturb.APPLIES[shape] or (name == "substitutions" and not settings.substitutions):
            continue
        if name == "typos":
            rows += [(f"typos {rate:.0%}", name, {"rate": float(rate)}) for rate in settings.typo_rates]
        elif name == "substitutions":
            rows.append((name, name, {"table": dict(settings.substitutions)}))
        else:
            rows.append((name, name, {}))
    return rows


def run_suite(inference: Any, examples: list[dict], settings: Any, train: Any = None, log: Any = None) -> dict:
    """The table of `ftune stress` as a dict: clean metric, then one row per perturbation (mean over seeds)."""
    task = inference.task
    shape = task.stress_input
    if shape is None:
        raise FtuneError(f"task={task.name} has no perturbation suite", where="task",
                         fix="stress a run of a text classification or tagging task")
    main, started = task.main_metric, time.perf_counter()
    clean, clean_rows = evaluate(inference, examples)
    clean_verdicts = [verdict(r) for r in clean_rows]
    extra: dict[str, Any] = {}
    if shape == "tagged_tokens":
        extra["pool"] = perturb.entity_pool(train) if train is not None and len(train) else {}
        extra["scheme"] = perturb.ts.detect_scheme([ex["tags"] for ex in examples])
    seeds = list(settings.seeds) or [0]
    rows = []
    for label, name, kwargs in plan(settings, shape):
        function = getattr(perturb, name)
        if name == "entity_swap":
            kwargs = {**kwargs, **extra}
        runs = []
        for seed in seeds if name in perturb.SEEDED else seeds[:1]:
            rng = random.Random(f"{label}/{seed}")
            perturbed = [function(ex, shape, rng, **kwargs) for ex in examples]
            metrics, predicted = evaluate(inference, perturbed)
            flips = sum(verdict(r) != v for r, v in zip(predicted, clean_verdicts, strict=True))
            changed = sum(p != ex for p, ex in zip(perturbed, examples, strict=True))
            runs.append({"seed": seed, main: metrics[main], "flipped": flips / len(examples),
                         "changed": changed / len(examples)})
        values = [r[main] for r in runs]
        rows.append({"perturbation": label, main: statistics.fmean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "delta": statistics.fmean(values) - clean[main],
                     "flipped": statistics.fmean(r["flipped"] for r in runs),
                     "changed": statistics.fmean(r["changed"] for r in runs), "seeds": runs})
        if log is not None:
            log.info("%s: %s %.4f (clean %.4f)", label, main, rows[-1][main], clean[main])
    return {"metric": main, "examples": len(examples), "clean": clean[main], "perturbations": rows,
            "seeds": seeds, "seconds": time.perf_counter() - started}


def table(result: dict) -> list[str]:
    """The console table's lines."""
    main = result["metric"]
    lines = [f"{'perturbation':<16}{main:>10}{'± std':>8}{'Δ clean':>9}{'flipped':>9}{'changed':>9}",
             f"{'clean':<16}{result['clean']:>10.4f}{'':>8}{'':>9}{'':>9}{'':>9}"]
    for row in result["perturbations"]:
        lines.append(f"{row['perturbation']:<16}{row[main]:>10.4f}{row['std']:>8.4f}{row['delta']:>+9.4f}"
                     f"{row['flipped']:>9.1%}{row['changed']:>9.1%}")
    return lines
