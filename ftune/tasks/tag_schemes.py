"""Tag schemes for sequence labelling: validation, detection, and normalisation to IOB2.

Metrics and entity spans are computed on IOB2 for every scheme: S-X becomes B-X, E-X becomes I-X, and an
I-X that does not continue an X entity starts one (as conlleval reads IOB1 and ill-formed predictions).
"""

from __future__ import annotations

from typing import Any

PREFIXES = ("B", "I", "E", "S")
SCHEMES = ("IOB1", "IOB2", "BIOES")


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER", ("O", "") for "O"; raises ValueError for anything else."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in PREFIXES or not kind:
        raise ValueError(tag)
    return prefix, kind


def detect_scheme(sequences: list[list[str]]) -> str:
    prefixes = {split_tag(tag)[0] for tags in sequences for tag in tags}
    if prefixes & {"E", "S"}:
        return "BIOES"
    for tags in sequences:
        previous = "O"
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix == "I" and (previous == "O" or split_tag(previous)[1] != kind):
                return "IOB1"
            previous = tag
    return "IOB2"


def scheme_problem(tag: str, scheme: str) -> str | None:
    """Why `tag` is not valid in `scheme`, or None."""
    try:
        prefix, _ = split_tag(tag)
    except ValueError:
        return f"tag `{tag}` is not O or B-/I-/E-/S-<TYPE>"
    if scheme in ("IOB1", "IOB2") and prefix in ("E", "S"):
        return f"tag `{tag}` is not valid in {scheme} (E-/S- prefixes belong to BIOES)"
    return None


def to_iob2(tags: list[str]) -> list[str]:
    out, previous_kind = [], ""
    for tag in tags:
        if tag == "O":
            out.append("O")
            previous_kind = ""
            continue
        prefix, kind = split_tag(tag)
        if prefix in ("B", "S") or kind != previous_kind:
            out.append(f"B-{kind}")
        else:
            out.append(f"I-{kind}")
        # after E-/S- the entity is closed: a following I- of the same type starts a new one
        previous_kind = "" if prefix in ("E", "S") else kind
    return out


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word inclusive) for each entity, read as IOB2."""
    spans, current = [], None
    for i, tag in enumerate([*to_iob2(tags), "O"]):
        if current and not tag.startswith("I-"):
            spans.append(current)
            current = None
        if tag.startswith("B-"):
            current = (tag[2:], i, i)
        elif tag.startswith("I-") and current:
            current = (current[0], current[1], i)
    return spans


def sort_labels(labels: set[str]) -> list[str]:
    """O first, then by type and prefix: a stable id order whatever order the data shows them in."""
    rest = sorted((l for l in labels if l != "O"), key=lambda l: (split_tag(l)[1], PREFIXES.index(split_tag(l)[0])))
    return ["O", *rest]


def continuation(tag: str, labels: list[str]) -> str:
    """The tag for a non-first sub-token of a word tagged `tag` (label_all_tokens): B-X continues as I-X."""
    if tag.startswith(("B-", "S-")) and f"I-{tag[2:]}" in labels:
        return f"I-{tag[2:]}"
    return tag


def distinct_tags(rows) -> set[str]:
    """The tags of examples on disk (ftune.data.examples.Rows), found in Arrow without building rows."""
    import pyarrow.compute as pc

    if "tags" not in rows.table.column_names:
        return set()
    return set(pc.unique(pc.list_flatten(rows.column("tags"))).to_pylist())


def detect_scheme_on_disk(rows) -> str:
    """ts.detect_scheme over examples on disk, vectorised: BIOES when E-/S- occur; IOB1 when some I-X does
    not continue an X entity (it follows O, another type, or starts a sentence); else IOB2."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = rows.column("tags")
    names = sorted(distinct_tags(rows))
    if not names:
        return "IOB2"  # as detect_scheme on no tags
    if {split_tag(t)[0] for t in names} & {"E", "S"}:
        return "BIOES"
    kinds = np.array([split_tag(t)[1] for t in names], dtype=object)
    inside = np.array([split_tag(t)[0] == "I" for t in names])
    lookup = pa.array(names, type=pa.string())
    for chunk in column.chunks:
        flat = pc.index_in(pc.list_flatten(chunk), value_set=lookup).to_numpy(zero_copy_only=False)
        if not len(flat):
            continue
        offsets = chunk.offsets.to_numpy()
        first = offsets[:-1] - offsets[0]  # where each sentence starts in the flattened tags
        starts = np.zeros(len(flat), dtype=bool)
        starts[first[first < len(flat)]] = True
        previous = np.roll(flat, 1)
        opens = inside[flat] & (starts | (kinds[previous] != kinds[flat]))
        if opens.any():
            return "IOB1"
    return "IOB2"


def entity_targets(words: list[int], probabilities: Any, labels: list[str], kind: str | None) -> list[dict]:
    """Explanation targets of a tagged window (ftune explain): one per predicted entity (of type `kind` when
    given), with the token positions of its words' first sub-tokens and the predicted label id at each.
    `words[t]` is the word a token position predicts (-1: none); `probabilities` is [tokens, labels]."""
    kinds = sorted({split_tag(label)[1] for label in labels if label != "O"})
    if kind is not None and kind not in kinds:
        from ftune.errors import FtuneError, did_you_mean

        raise FtuneError(f"target `{kind}` is not an entity type of this model", where="explain.target",
                         fix=did_you_mean(kind, kinds) or f"choose from: {', '.join(kinds)}")
    owned = [(t, w) for t, w in enumerate(words) if w >= 0]
    predicted = [int(probabilities[t].argmax()) for t, _ in owned]
    targets = []
    for found, first, last in entities([labels[i] for i in predicted]):
        if kind is None or found == kind:
            span = range(first, last + 1)
            targets.append({"label": found, "index": [predicted[i] for i in span],
                            "positions": [owned[i][0] for i in span], "words": [owned[i][1] for i in span]})
    return targets


def span_tags(kind: str, n: int, scheme: str, first_tag: str) -> list[str]:
    """The tags of one entity of `n` words in `scheme` that replaces an entity whose first tag was
    `first_tag` (IOB1 keeps its B-/I- start: B- there marks an entity right after one of the same type)."""
    if scheme == "BIOES":
        return [f"S-{kind}"] if n == 1 else [f"B-{kind}", *[f"I-{kind}"] * (n - 2), f"E-{kind}"]
    first = first_tag[0] if scheme == "IOB1" else "B"
    return [f"{first}-{kind}", *[f"I-{kind}"] * (n - 1)]


def fill_untagged(tags: list[str], spans: list[tuple[str, int, int]], scheme: str, known: set[str]) -> tuple[list[str], int]:
    """`tags` with each entity of `spans` ((type, first word, end word exclusive), e.g. an earlier model's)
    written in `scheme` where all its words are O, unless it would join a tagged entity of its type that follows
    it or needs a tag outside `known`; and how many were written (continual.pseudo_label)."""
    tags, added = list(tags), 0
    for kind, first, end in spans:
        after = split_tag(tags[end]) if end < len(tags) else ("O", "")
        if any(tag != "O" for tag in tags[first:end]) or after in (("I", kind), ("E", kind)):
            continue
        before = split_tag(tags[first - 1])[1] if first else ""
        span = span_tags(kind, end - first, scheme, f"{'B' if before == kind else 'I'}-{kind}")  # IOB1: B- after X
        if set(span) <= known:
            tags[first:end] = span
            added += 1
    return tags, added
