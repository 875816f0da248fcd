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
