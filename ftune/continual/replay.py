"""Replay (rehearsal): earlier training features mixed into the new training set at a seeded share.

With `ratio` r and n new features, k = round(n · r / (1 − r)) earlier features are drawn (without replacement
while there are enough, each earlier feature once per full pass otherwise) with the run's seed, so that k / (n + k)
is r: the share of every epoch, and, since batches are shuffled, of each batch on average.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def replay_count(new: int, ratio: float) -> int:
    return int(round(new * ratio / (1.0 - ratio))) if ratio > 0 else 0


def sample(available: int, count: int, seed: int) -> np.ndarray:
    """`count` indices into `available` earlier features, seeded; sorted (Arrow reads in order)."""
    rng = np.random.default_rng(seed)
    passes, rest = divmod(count, available) if available else (0, 0)
    chosen = [np.arange(available)] * passes + [rng.choice(available, size=rest, replace=False)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def mix(train: Any, earlier: Any, ratio: float, seed: int) -> tuple[Any, int]:
    """The training features with the replayed ones appended (the engine shuffles them), and how many were added."""
    count = replay_count(len(train), ratio)
    if not count or not len(earlier):
        return train, 0
    indices = sample(len(earlier), count, seed).tolist()
    if isinstance(train, list) or isinstance(earlier, list):
        from ftune.data.batching import rows

        return list(train if isinstance(train, list) else rows(train, list(range(len(train))))) + \
            rows(earlier, indices), count
    import datasets

    picked = earlier.select(indices)
    if picked.features != train.features:  # e.g. int32 and int64 columns inferred from different files
        picked = picked.cast(train.features)
    return datasets.concatenate_datasets([train, picked]), count
