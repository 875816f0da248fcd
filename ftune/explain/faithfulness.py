"""Faithfulness of attributions, as the ERASER benchmark measures it (DeYoung et al. 2020): remove the top k %
of an input's tokens by attribution and the explained probability should fall (comprehensiveness = p(x) -
p(x without them)); keep only them and it should hold (sufficiency = p(x) - p(only them), lower is better).
Each at k = 10/20/50 % and their mean over k (AOPC), for the method and for a random ranking of the same
tokens (seeded). Tokens are removed from the input ids (not masked), as ERASER does; special tokens stay,
and so do the explained positions of a tagging target (an entity's own tokens), whose context is ranked.
"""

from __future__ import annotations

import random
import time

from ftune.explain.attribution import Explainer

KS = (0.1, 0.2, 0.5)


def measure(explainer: Explainer, examples: list, seed: int = 0, ks: tuple[float, ...] = KS) -> dict:
    """Mean comprehensiveness and sufficiency at each k and their AOPC, for the method (under "method"; its
    name under "explained_by") and for random rankings (under "random")."""
    task, rng = explainer.task, random.Random(seed)
    if explainer.kind == "generation":
        from ftune.errors import FtuneError

        raise FtuneError(f"faithfulness is not measured for generated text (task={task.name})",
                         where="explain.faithfulness", fix="explain inputs instead: leave explain.faithfulness=false")
    sums = {name: {"comprehensiveness": [0.0] * len(ks), "sufficiency": [0.0] * len(ks)}
            for name in ("method", "random")}
    count, seconds, started = 0, 0.0, time.perf_counter()
    features = task.featurize(list(examples), explainer.tokenizer)
    for feature in features:
        before = time.perf_counter()
        targets, _ = explainer.explain_feature(feature)
        seconds += time.perf_counter() - before
        for target in targets:
            candidates = [t for t in range(feature["length"]) if feature["input_ids"][t] not in explainer.specials
                          and (target["positions"] is None or t not in target["positions"])]
            if not candidates:
                continue
            ranked = sorted(candidates, key=lambda t: -target["scores"][t])
            shuffled = rng.sample(candidates, len(candidates))
            variants, remapped = [], []
            for ranking in (ranked, shuffled):
                for k in ks:
                    top = set(ranking[:max(1, round(k * len(candidates)))])
                    for removed in (top, set(candidates) - top):  # comprehensiveness, sufficiency
                        variant, positions = drop(feature, removed, target["positions"])
                        variants.append(variant)
                        remapped.append({**target, "positions": positions})
            probabilities = explainer.probabilities(variants)
            scores = [float(explainer.score(probabilities[i:i + 1], t)[0]) for i, t in enumerate(remapped)]
            full = target["probability"]
            for r, name in enumerate(("method", "random")):
                for j in range(len(ks)):
                    base = (r * len(ks) + j) * 2
                    sums[name]["comprehensiveness"][j] += full - scores[base]
                    sums[name]["sufficiency"][j] += full - scores[base + 1]
            count += 1
    result = {"explained_by": explainer.settings.method, "targets": count, "examples": len(examples),
              "ks": list(ks), "seed": seed, "seconds_per_example": seconds / max(len(examples), 1),
              "seconds_total": time.perf_counter() - started}
    for name, measured in sums.items():
        result[name] = {}
        for key, values in measured.items():
            means = [v / max(count, 1) for v in values]
            result[name][key] = {f"{round(k * 100)}%": m for k, m in zip(ks, means, strict=True)}
            result[name][key]["aopc"] = sum(means) / len(means)
    return result


def drop(feature: dict, removed: set[int], positions: list[int] | None) -> tuple[dict, list[int] | None]:
    """The feature without the token positions `removed` (every per-token list shortened alike) and the
    explained positions renumbered."""
    n = feature["length"]
    keep = [t for t in range(n) if t not in removed]
    shortened = {key: ([value[t] for t in keep] if isinstance(value, list | tuple) and len(value) == n else value)
                 for key, value in feature.items()}
    shortened["length"] = len(keep)
    if positions is None:
        return shortened, None
    new = {t: i for i, t in enumerate(keep)}
    return shortened, [new[t] for t in positions]


def table(result: dict) -> list[tuple]:
    """Rows (ranking, measure, k..., AOPC) for the console."""
    rows = []
    for name in ("method", "random"):
        label = result["explained_by"] if name == "method" else "random"
        for key in ("comprehensiveness", "sufficiency"):
            rows.append((label, key, *result[name][key].values()))
    return rows
