"""Seeded perturbations of examples for `ftune stress` (CheckList's invariance tests, Ribeiro et al. 2020).

Each function takes one example and a `random.Random` and returns a new example (the input is never
modified): text tasks (`stress_input="text"`) edit `text` and `text_pair`, labels unchanged; tagged tokens
(`stress_input="tagged_tokens"`) edit `tokens` and keep `tags` aligned, also when a perturbation changes the
number of words (punctuation removal, entity swaps).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable

from ftune.tasks import tag_schemes as ts

PUNCTUATION = re.compile(r"[^\w\s]")
WORDS = re.compile(r"(\s+)")
TEXT_FIELDS = ("text", "text_pair")


def typo(word: str, rng: random.Random) -> str:
    """One character typo: swap two neighbours, drop, double or replace a letter (words of 2+ letters)."""
    if len(word) < 2 or not any(c.isalpha() for c in word):
        return word
    i = rng.randrange(len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "replace"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i + 1] + word[i:]
    return word[:i] + rng.choice(string.ascii_lowercase) + word[i + 1:]


def _map_words(text: str, edit: Callable[[str], str]) -> str:
    return "".join(part if not part or part.isspace() else edit(part) for part in WORDS.split(text))


def _on_text(example: dict, edit: Callable[[str], str]) -> dict:
    return {**example, **{k: edit(example[k]) for k in TEXT_FIELDS if isinstance(example.get(k), str)}}


def _on_tokens(example: dict, edit: Callable[[str], str]) -> dict:
    return {**example, "tokens": [edit(t) for t in example["tokens"]]}


def word_edit(example: dict, shape: str, edit: Callable[[str], str]) -> dict:
    """`edit` applied to each word (text split on whitespace) or each token."""
    if shape == "text":
        return _on_text(example, lambda text: _map_words(text, edit))
    return _on_tokens(example, edit)


def typos(example: dict, shape: str, rng: random.Random, rate: float) -> dict:
    return word_edit(example, shape, lambda w: typo(w, rng) if rng.random() < rate else w)


def lowercase(example: dict, shape: str, rng: random.Random) -> dict:
    return word_edit(example, shape, str.lower)


def uppercase(example: dict, shape: str, rng: random.Random) -> dict:
    return word_edit(example, shape, str.upper)


def punctuation(example: dict, shape: str, rng: random.Random) -> dict:
    """Punctuation removed; a token that was only punctuation is dropped with its tag (an entity's is kept)."""
    if shape == "text":
        return _on_text(example, lambda text: " ".join(PUNCTUATION.sub("", text).split()))
    tokens, tags = [], []
    for token, tag in zip(example["tokens"], example["tags"], strict=True):
        bare = PUNCTUATION.sub("", token)
        if bare or tag != "O":
            tokens.append(bare or token)
            tags.append(tag)
    return {**example, "tokens": tokens, "tags": tags}


def whitespace(example: dict, shape: str, rng: random.Random) -> dict:
    """Runs of 1-3 spaces or tabs between words, and around the text (text tasks; tokens have no spaces)."""
    if shape != "text":
        return example

    def noisy(text: str) -> str:
        gap = lambda: "".join(rng.choice(" \t ") for _ in range(rng.randint(1, 3)))  # noqa: E731
        return gap() + gap().join(text.split()) + gap()
    return _on_text(example, noisy)


def substitutions(example: dict, shape: str, rng: random.Random, table: dict[str, str]) -> dict:
    """Whole words replaced (case-insensitive) by the ones `table` says must not change the prediction."""
    if not table:
        return example
    lowered = {k.lower(): v for k, v in table.items()}
    if shape == "text":
        pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in lowered) + r")\b", re.IGNORECASE)
        return _on_text(example, lambda text: pattern.sub(lambda m: lowered[m.group().lower()], text))
    tokens, tags = [], []
    for token, tag in zip(example["tokens"], example["tags"], strict=True):
        replacement = lowered.get(token.lower()) if tag == "O" else None
        new = replacement.split() if replacement else [token]
        tokens += new
        tags += [tag] * len(new)
    return {**example, "tokens": tokens, "tags": tags}


def entity_pool(examples, limit: int = 20000) -> dict[str, list[list[str]]]:
    """Entity strings (as token lists) by type from tagged examples (the training split), sorted, distinct."""
    pool: dict[str, set[tuple[str, ...]]] = {}
    for n, ex in enumerate(examples):
        if n >= limit:
            break
        for kind, first, last in ts.entities(ts.to_iob2(ex["tags"])):
            pool.setdefault(kind, set()).add(tuple(ex["tokens"][first:last + 1]))
    return {kind: [list(e) for e in sorted(found)] for kind, found in pool.items()}


def entity_swap(example: dict, shape: str, rng: random.Random, pool: dict, scheme: str) -> dict:
    """Each gold entity replaced by another of its type from `pool`; its tags follow (in `scheme`)."""
    if shape != "tagged_tokens" or not pool:
        return example
    tokens, tags, at = [], [], 0
    for kind, first, last in ts.entities(ts.to_iob2(example["tags"])):
        tokens += example["tokens"][at:first]
        tags += example["tags"][at:first]
        original = example["tokens"][first:last + 1]
        choices = [e for e in pool.get(kind, []) if e != original] or [original]
        chosen = rng.choice(choices)
        tokens += chosen
        tags += ts.span_tags(kind, len(chosen), scheme, example["tags"][first])
        at = last + 1
    tokens += example["tokens"][at:]
    tags += example["tags"][at:]
    return {**example, "tokens": tokens, "tags": tags}


SEEDED = {"typos", "whitespace", "entity_swap"}  # the others give the same examples whatever the seed
NAMES = ("typos", "lowercase", "uppercase", "punctuation", "whitespace", "entity_swap", "substitutions")
APPLIES = {"text": set(NAMES) - {"entity_swap"}, "tagged_tokens": set(NAMES) - {"whitespace"}}
