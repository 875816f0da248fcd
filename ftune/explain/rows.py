"""One JSON-ready row per input: the prediction's explanations, per token and per word."""

from __future__ import annotations

from typing import Any

from ftune.explain.attribution import Explainer, words_of

SHOWN = ("text", "text_pair", "tokens", "question", "context", "source", "messages")  # the input fields a row repeats


def explain_examples(explainer: Explainer, examples: list[dict]) -> list[dict]:
    """Rows for examples as `task.read_inputs` makes them (an unreadable input: {"error": ...})."""
    task, tokenizer = explainer.task, explainer.tokenizer
    good = [i for i, ex in enumerate(examples) if "error" not in ex and not ex.get("invalid")]
    examples = [{**ex, "error": ex.get("error") or "an input the task cannot read"} if ex.get("invalid") else ex
                for ex in examples]  # (relation: an input without its two entity spans)
    rows: list[dict[str, Any]] = [{"error": ex["error"]} if "error" in ex else
                                  {k: ex[k] for k in SHOWN if k in ex} | {"explanations": []} for ex in examples]
    features = task.featurize([examples[i] for i in good], tokenizer) if good else []
    for feature in features:
        number = good[feature["example"]]
        example = examples[number]
        targets, prediction = explainer.explain_feature(feature)
        if prediction is not None:  # a sequence's label or the generated text, before the explanations
            explanations = rows[number].pop("explanations")
            rows[number]["prediction"] = _rounded(prediction)
            rows[number]["explanations"] = explanations
        tokens = tokenizer.convert_ids_to_tokens(list(feature["input_ids"]))
        words = task.explain_words(example, feature, tokenizer)
        for target in targets:
            rows[number]["explanations"].append(_explanation(target, tokens, words, explainer.settings.method))
    return rows


def _explanation(target: dict, tokens: list[str], words: tuple | None, method: str) -> dict:
    item: dict[str, Any] = {"label": target["label"], "probability": _round(target["probability"]), "method": method}
    if target.get("words") is not None and words is not None:
        item["span"] = " ".join(words[0][w] for w in target["words"])
    elif target.get("span"):  # an answer span: its words, or its tokens when words are unknown
        covered = sorted({words[1][t] for t in target["positions"] if words[1][t] is not None}) if words else []
        item["span"] = " ".join(words[0][w] for w in covered) if covered else \
            " ".join(tokens[t] for t in target["positions"])
    if target.get("log_probability") is not None:  # a generated token: log p(token | prompt, earlier tokens)
        item["log_probability"] = _round(target["log_probability"])
    if target["delta"] is not None:
        item["delta"] = _round(target["delta"])  # integrated gradients: sum of attributions - (f(x) - f(baseline))
    item["tokens"] = [{"token": t, "score": _round(s)} for t, s in zip(tokens, target["scores"], strict=True)]
    if words is not None:
        item["words"] = [{"word": w["word"], "score": _round(w["score"])} for w in words_of(target["scores"], *words)]
    return item


def _rounded(value: Any) -> Any:
    """Floats to 5 significant digits, inside dicts too (a multi-label prediction: {"labels": {label: p}})."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return _round(value) if isinstance(value, float) else value


def _round(value: Any) -> float:
    return float(f"{float(value):.5g}")
