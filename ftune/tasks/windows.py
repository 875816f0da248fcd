"""Sub-word windows over a sentence of words, for token tagging: a sentence longer than the model's window is
cut into windows that share `stride` context tokens on each side, each word owned (predicted) by one window."""

from __future__ import annotations

from typing import Any


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence ([CLS] / [SEP], <s> / </s>, ...)."""
    bare = tokenizer(["word"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    full = tokenizer(["word"], is_split_into_words=True)["input_ids"]
    start = next(i for i in range(len(full)) if full[i:i + len(bare)] == bare)
    return full[:start], full[start + len(bare):]


def plan_windows(sizes: list[int], budget: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Windows over words as (context start, owned start, owned end, context end), each within `budget`
    sub-tokens; owned ranges tile the sentence exactly once. `sizes` are sub-tokens per word (≤ budget)."""
    n = len(sizes)
    if sum(sizes) <= budget:
        return [(0, 0, n, n)] if n else []
    stride = min(stride, budget // 4)
    own_budget = budget - 2 * stride
    windows, start = [], 0
    while start < n:
        end, used = start, 0
        while end < n and (end == start or used + sizes[end] <= own_budget):
            used += sizes[end]
            end += 1
        left = start
        while left > 0 and sum(sizes[left - 1:start]) <= stride and used + sum(sizes[left - 1:start]) <= budget:
            left -= 1
        total = used + sum(sizes[left:start])
        right = end
        while right < n and total + sizes[right] <= budget:
            total += sizes[right]
            right += 1
        windows.append((left, start, end, right))
        start = end
    return windows


def token_words(tokenizer: Any, words: list[str], feature: dict) -> list[int | None] | None:
    """The word of each token of a one-window feature (None: a special token), or None when the feature is
    not the whole sentence (a window of a long one): `ftune explain` sums sub-token attributions by it."""
    prefix, suffix = special_tokens(tokenizer)
    encoded = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    index = [None] * len(prefix) + list(encoded.word_ids()) + [None] * len(suffix)
    return index if len(index) == feature["length"] else None
