"""SQuAD-style extractive QA helpers: reading SQuAD JSON articles, an answer's token span inside a window, and
the top start/end candidates of a window's logits."""

from __future__ import annotations

import math


def iter_squad(articles: list, path: str):
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                yield {"id": str(qa.get("id", f"{a}-{p}-{q}")), "question": qa.get("question", ""),
                       "context": paragraph.get("context", ""),
                       "answers": [{"text": x["text"], "start": x["answer_start"]} for x in qa.get("answers", [])],
                       "impossible": bool(qa.get("is_impossible", False)),
                       "where": f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"}


def top_pairs(top, row: int) -> list[tuple[int, float]]:
    return [(i, v) for i, v in zip(top.indices[row].tolist(), top.values[row].tolist(), strict=True) if v > -math.inf]


def span_positions(example: dict, offsets: list) -> tuple[int, int]:
    """Token positions of the first answer inside this window, or (0, 0) (the CLS token) when absent."""
    if not example.get("answers"):
        return 0, 0
    answer = example["answers"][0]
    begin, finish = answer["start"], answer["start"] + len(answer["text"])
    inside = [i for i, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > begin or offsets[inside[-1]][1] < finish:
        return 0, 0
    start = next(i for i in inside if offsets[i][1] > begin)
    end = next(i for i in reversed(inside) if offsets[i][0] < finish)
    return start, max(start, end)


def span_targets(feature: dict, probabilities, max_answer_length: int, target: str | None) -> list[dict]:
    """`ftune explain`: the window's best answer span (start ≤ end inside the context, at most
    `max_answer_length` tokens) by p(start) · p(end); `probabilities` is [tokens, 2] (start, end)."""
    import torch

    from ftune.errors import FtuneError

    if target is not None:
        raise FtuneError("qa explains its predicted answer span; explain.target does not apply", where="explain.target",
                         fix="leave explain.target unset")
    inside = [i for i, o in enumerate(feature["offsets"]) if o is not None]
    if not inside:
        return []
    p_start, p_end = probabilities[inside, 0], probabilities[inside, 1]
    scores = p_start[:, None] * p_end[None, :]  # [start, end] over the context tokens
    gap = torch.arange(len(inside))  # the context tokens of a window are contiguous
    length = gap[None, :] - gap[:, None]  # end - start
    scores = scores.masked_fill((length < 0) | (length >= max_answer_length), -1.0)
    best = int(scores.argmax())
    first, last = inside[best // len(inside)], inside[best % len(inside)]
    return [{"label": "answer", "index": [0, 1], "positions": list(range(first, last + 1)), "span": True}]

