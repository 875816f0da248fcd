"""Batch orders: length-grouped (random, but similar lengths together) and sorted (for evaluation).

Orders are pure functions of (lengths, batch size, seed, epoch), so a resumed run replays exactly the
batches an uninterrupted run would have seen, and can skip the ones already trained on. Lengths are a
numpy column (one int32 per feature, read from the Arrow `length` column) and an epoch's batches are one
index array with each batch's bounds (`Batches`): about 24 bytes per feature, so 2 GB of raw text in 128-token
blocks (3.9 million features) costs ~80 MB here at the peak, not a Python list and an array object per batch
(183 MB measured before).
"""

from __future__ import annotations

import array
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

EVAL_CHUNK = 20_000  # examples per evaluation chunk (Engine.evaluate): bounds what metrics hold


def feature_column(features: Any, name: str) -> np.ndarray:
    """One int field of every feature as an int64 array: the Arrow column of a dataset, read without
    materialising rows, or the field of each dict in a list."""
    data = getattr(features, "data", None)  # datasets.Dataset: its (memory-mapped) Arrow table
    if data is not None and hasattr(features, "_indices"):
        column = features.with_format("numpy")[name] if features._indices is not None else data.column(name)
        return np.asarray(column, dtype=np.int64)
    return np.fromiter((f[name] for f in features), dtype=np.int64, count=len(features))


def feature_lengths(features: Any) -> np.ndarray:
    return feature_column(features, "length")


def example_chunks(features: Any, num_examples: int, size: int):
    """(first, last, features of examples[first:last]) for consecutive ranges of `size` examples.
    Features come in example order (windows of one example are adjacent), so each range is one slice."""
    if not len(features):
        yield 0, num_examples, features
        return
    owners = feature_column(features, "example")
    bounds = list(range(0, num_examples, size)) + [num_examples]
    cuts = np.searchsorted(owners, bounds, side="left").tolist()
    for first, last, start, end in zip(bounds[:-1], bounds[1:], cuts[:-1], cuts[1:], strict=True):
        part = features[start:end] if isinstance(features, list) else features.select(range(start, end))
        yield first, last, part


def rows(features: Any, indices: list[int]) -> list[dict]:
    """features[i] for each index: one gather of the Arrow table for a dataset, plain indexing for a list."""
    if isinstance(features, list):
        return [features[i] for i in indices]
    columns = features[indices]  # datasets.Dataset: a dict of columns, in the order of `indices`
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


class Indexed(torch.utils.data.Dataset):
    """(index, feature) pairs of a list or a memory-mapped dataset; a whole batch is one Arrow read."""

    def __init__(self, features):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[int, dict]:
        return index, self.features[index]

    def __getitems__(self, indices) -> list[tuple[int, dict]]:  # the DataLoader's batched fetch
        indices = [int(i) for i in indices]
        return list(zip(indices, rows(self.features, indices), strict=True))


def _cut(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class Batches(Sequence):
    """An epoch's index batches as one int64 array of feature indices and each batch's (start, end) in it:
    16 bytes a batch, not a numpy array object (~110 bytes) per batch held for the whole epoch. Indexing
    gives a batch (a view), slicing (with a step too) and `+` give Batches; a DataLoader's batch_sampler
    takes it as it is."""

    def __init__(self, flat: np.ndarray, starts: np.ndarray, ends: np.ndarray):
        self.flat, self.starts, self.ends = flat, starts, ends

    @classmethod
    def cut(cls, flat: np.ndarray, batch_size: int, order: np.ndarray | None = None) -> Batches:
        """`flat` cut into batches of batch_size (the last one shorter), taken in `order` when given."""
        starts = np.arange(0, len(flat), batch_size, dtype=np.int64)
        ends = np.minimum(starts + batch_size, len(flat))
        return cls(flat, starts, ends) if order is None else cls(flat, starts[order], ends[order])

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return Batches(self.flat, self.starts[key], self.ends[key])
        return self.flat[self.starts[key]:self.ends[key]]

    def __iter__(self):
        for start, end in zip(self.starts, self.ends, strict=True):
            yield self.flat[start:end]

    def __add__(self, other: Batches) -> Batches:
        if other.flat is not self.flat:
            raise ValueError("only batches of one epoch's order can be joined")
        return Batches(self.flat, np.concatenate([self.starts, other.starts]), np.concatenate([self.ends, other.ends]))

    def sizes(self) -> np.ndarray:
        return self.ends - self.starts


def _permutation(rng: random.Random, n: int) -> np.ndarray:
    """The permutation `rng.shuffle(list(range(n)))` gives, drawn from the same generator state.

    random.shuffle consumes the generator the same way for any sequence of length n, so shuffling the
    positions and indexing with them equals shuffling the items: the orders of earlier versions (and of
    the recorded-loss tests) stay exactly as they were. The positions are a C array of int64 (8 bytes each),
    not a list of Python ints (36): 4 million features (2 GB of raw text in 128-token blocks) shuffle in
    31 MB instead of 140.
    """
    order = array.array("q", range(n))
    rng.shuffle(order)
    return np.frombuffer(order, dtype=np.int64)


def train_batches(lengths, batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  megabatch_factor: int = 50) -> Batches:
    """Index batches for one epoch.

    With `group_by_length`, indices are shuffled, cut into mega-batches of `megabatch_factor` batches, each
    sorted by length (longest first, stable) and cut into batches, and the batches are shuffled again:
    padding drops while every epoch still sees a different random order (as in transformers'
    LengthGroupedSampler).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = random.Random(seed * 1_000_003 + epoch)
    order = _permutation(rng, len(lengths))
    if not group_by_length:
        return Batches.cut(order, batch_size)
    size = batch_size * megabatch_factor  # a multiple of batch_size: cutting the whole array cuts each mega-batch
    grouped = np.empty_like(order)
    for start in range(0, len(order), size):
        mega = order[start:start + size]
        # stable on -length: ties keep their shuffled order, as Python's sorted(key=-length) did
        grouped[start:start + size] = mega[np.argsort(-lengths[mega], kind="stable")]
    count = -(-len(order) // batch_size)
    return Batches.cut(grouped, batch_size, _permutation(rng, count))


def eval_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Longest first, so the peak memory shows up in the first batch rather than at the end."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return _cut(np.argsort(-lengths, kind="stable"), batch_size)


def pad(sequences: list[list[int]], value: int) -> list[list[int]]:
    width = max(len(s) for s in sequences)
    return [s + [value] * (width - len(s)) for s in sequences]


def pack_conversations(features: list[dict], max_length: int, pad_id: int) -> dict:
    """A causal-LM batch of conversations packed first-fit into rows of at most max_length tokens (sft's
    task.packing); position ids restart per conversation, so attention stays within each."""
    rows: list[dict] = []
    segments = []
    for f in features:
        row = next((r for r in rows if len(r["ids"]) + f["length"] <= max_length), None)
        if row is None:
            row = {"ids": [], "labels": [], "positions": []}
            rows.append(row)
        start = len(row["ids"])
        segments.append((rows.index(row), start, start + f["length"]))
        # the first token is never a target: it would be predicted from the previous conversation
        row["ids"] += f["input_ids"]
        row["labels"] += [-100, *f["labels"][1:]]
        row["positions"] += list(range(f["length"]))
    width = max(len(r["ids"]) for r in rows)
    for r in rows:  # padding forms its own "conversation" (positions from 0): it cannot affect real tokens
        r["positions"] += list(range(width - len(r["ids"])))
    inputs = {"input_ids": torch.tensor(pad([r["ids"] for r in rows], pad_id)),
              "position_ids": torch.tensor([r["positions"] for r in rows])}
    return {"inputs": inputs, "targets": {"labels": torch.tensor(pad([r["labels"] for r in rows], -100))},
            "tokens": sum(f["length"] for f in features), "segments": segments}
