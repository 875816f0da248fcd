"""`stress.attack=input_reduction`: AllenNLP Interpret's input reduction (Feng et al. 2018, "Pathologies of
Neural Models Make Interpretations Difficult"), greedy (a beam of one): repeatedly remove the input token whose
attribution for the predicted label is smallest in magnitude (recomputed after each removal, by the method
asked) while the prediction holds; what is left is a reduced input the model still labels alike. Reported per
item: how many of its (non-special) tokens were enough, and the mean and median share kept. Tokens are removed
from the ids (special tokens stay), as faithfulness does. For tasks that label a whole sequence.
"""

from __future__ import annotations

import statistics
import time

from ftune.errors import FtuneError
from ftune.explain.attribution import Explainer
from ftune.explain.faithfulness import drop


def reduce_inputs(explainer: Explainer, examples: list[dict]) -> dict:
    """{"method", "examples", "mean_share", "median_share", "mean_kept", "median_kept", "seconds", "items": per
    item {"example", "tokens", "kept", "share", "label", "reduced"}}."""
    task, tokenizer = explainer.task, explainer.tokenizer
    started, items = time.perf_counter(), []
    for feature in task.featurize(list(examples), tokenizer):
        probabilities = explainer.probabilities([feature])[0]
        if explainer.kind != "labels" or probabilities.dim() != 1:
            raise FtuneError(f"task={task.name} does not label a whole sequence: input_reduction needs one label",
                             where="stress.attack", fix="use input_reduction on a classification run")
        index = int(probabilities.argmax())
        target = {"label": task.labels[index], "index": index, "positions": None}
        current = feature
        candidates = _candidates(explainer, current)
        total = len(candidates)
        while len(candidates) > 1:
            scores, _ = explainer.attribute(current, target)
            least = min(candidates, key=lambda t: abs(scores[t]))
            shorter, _ = drop(current, {least}, None)
            if int(explainer.probabilities([shorter])[0].argmax()) != index:
                break  # removing it would change the prediction: `current` is the reduced input
            current = shorter
            candidates = _candidates(explainer, current)
        kept = len(candidates)
        ids = [current["input_ids"][t] for t in candidates]
        items.append({"example": int(feature["example"]), "label": target["label"], "tokens": total, "kept": kept,
                      "share": kept / total if total else 1.0, "reduced": tokenizer.decode(ids)})
    shares, kept = [i["share"] for i in items], [i["kept"] for i in items]
    return {"attack": "input_reduction", "method": explainer.settings.method, "examples": len(items),
            "mean_share": statistics.fmean(shares) if items else None,
            "median_share": statistics.median(shares) if items else None,
            "mean_kept": statistics.fmean(kept) if items else None,
            "median_kept": statistics.median(kept) if items else None,
            "seconds": time.perf_counter() - started, "items": items}


def _candidates(explainer: Explainer, feature: dict) -> list[int]:
    """The positions that may be removed: every token but the special ones."""
    return [t for t in range(feature["length"]) if feature["input_ids"][t] not in explainer.specials]


def summary(result: dict) -> str:
    """The console line."""
    if not result["examples"]:
        return "input_reduction: no examples"
    return (f"input_reduction ({result['method']}): {result['examples']} examples keep their prediction with a "
            f"median of {result['median_kept']:g} token(s) (mean share kept {result['mean_share']:.1%}, "
            f"median {result['median_share']:.1%})")
