"""What the generative tasks (seq2seq, sft) and `ftune chat` share: `generate` settings and calls, the
packing probe, text metrics and table rows.

Metrics use the reference libraries: ROUGE from `rouge-score` (stemmed, F-measure), BLEU and chrF from
`sacrebleu` (corpus level, its default tokenisation), exact match and token F1 with SQuAD's normalisation.
All scores are on a 0-100 scale, as the libraries and papers report them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

from ftune.errors import FtuneError


def generate_kwargs(cfg: Any, tokenizer: Any) -> dict:
    """Keyword arguments of `model.generate` from a task's `generation` config."""
    kwargs = {"max_new_tokens": cfg.max_new_tokens, "num_beams": cfg.num_beams, "do_sample": cfg.do_sample,
              "repetition_penalty": cfg.repetition_penalty, "pad_token_id": tokenizer.pad_token_id}
    if cfg.num_beams > 1:
        kwargs["length_penalty"] = cfg.length_penalty
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
    if cfg.max_new_tokens < 1 or cfg.num_beams < 1:
        raise FtuneError("max_new_tokens and num_beams must be ≥ 1", where="task.generation")
    return kwargs


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures × 100 (rouge-score, Porter stemming, as in the HF summarisation examples)."""
    totals = rouge_totals(predictions, references, Counter())
    n = max(len(predictions), 1)
    return {name: 100 * totals[name] / n for name in ("rouge1", "rouge2", "rougeL")}


def rouge_totals(predictions: list[str], references: list[str], totals: Counter) -> Counter:
    """Add each pair's ROUGE F-measures to `totals`, in order (evaluation chunks continue one running sum)."""
    rouge_scorer = _require("rouge_score.rouge_scorer", "rouge-score")

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for prediction, reference in zip(predictions, references, strict=True):
        for name, score in scorer.score(reference, prediction).items():
            totals[name] += score.fmeasure
    return totals


def bleu_chrf(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu defaults: 13a tokenisation, one reference per segment)."""
    sacrebleu = _require("sacrebleu", "sacrebleu")

    return {"bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
            "chrf": sacrebleu.corpus_chrf(predictions, [references]).score}


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if not pred or not gold:
        return float(pred == gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match_f1(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """SQuAD exact match and token F1 × 100, each the best over an example's references."""
    em, f1 = exact_match_f1_sums(predictions, references, 0.0, 0.0)
    n = max(len(predictions), 1)
    return {"exact_match": 100 * em / n, "token_f1": 100 * f1 / n}


def exact_match_f1_sums(predictions: list[str], references: list[list[str]], em: float, f1: float):
    """`em` and `f1` plus each example's best scores, added in order (a running sum over chunks)."""
    for prediction, golds in zip(predictions, references, strict=True):
        em += max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)
        f1 += max(token_f1(prediction, g) for g in golds)
    return em, f1


def table_rows(metrics: dict) -> list[tuple]:
    """(name, value) rows of the numeric metrics, for the console table."""
    return [(name, value) for name, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)]


def nested(row: dict, dotted: str) -> Any:
    """row["a"]["b"] for "a.b" (nested hub fields such as translation.de); None when absent."""
    value: Any = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def generate_replies(model: Any, tokenizer: Any, prompts: list[list[int]], cfg: Any, streamer: Any = None) -> list[str]:
    """Greedy/beam/sampled replies to token-id prompts, left-padded into one batch."""
    import torch

    width = max(len(p) for p in prompts)
    device = next(model.parameters()).device
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    output = model.generate(input_ids=ids, attention_mask=mask, use_cache=True, streamer=streamer,
                            **generate_kwargs(cfg, tokenizer))
    return [text.strip() for text in tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)]


def check_packing(model: Any) -> None:
    """Refuse packing unless this model keeps packed sequences apart: two sequences' logits, packed in one
    row with restarting position ids, must equal their logits when run alone."""
    import torch

    was_training = model.training
    model.eval()
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.arange(7, 17, device=next(model.parameters()).device).remainder(vocab)[None]
    with torch.no_grad():
        alone = model(input_ids=ids[:, 6:]).logits
        packed = model(input_ids=ids, position_ids=torch.tensor([[*range(6), *range(4)]], device=ids.device)).logits
    model.train(was_training)
    if not torch.allclose(packed[:, 6:].float(), alone.float(), atol=1e-3, rtol=1e-3):
        raise FtuneError(f"{type(model).__name__} lets packed conversations attend to each other here "
                         f"(attention: {getattr(model.config, '_attn_implementation', '?')})",
                         where="task.packing", fix="set task.packing=false")


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise FtuneError(f"the generation metrics need the package `{package}`", where="task.metrics",
                         fix="pip install 'ftune[gen]'") from error
