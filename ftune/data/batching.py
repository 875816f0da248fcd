"""Batch orders: length-grouped (random, but similar lengths together) and sorted (for evaluation).

Orders are pure functions of (lengths, batch size, seed, epoch), so a resumed run replays exactly the
batches an uninterrupted run would have seen, and can skip the ones already trained on.
"""

from __future__ import annotations

import random


def train_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  megabatch_factor: int = 50) -> list[list[int]]:
    """Index batches for one epoch.

    With `group_by_length`, indices are shuffled, cut into mega-batches of `megabatch_factor` batches, each
    sorted by length and cut into batches, and the batches are shuffled again: padding drops while every
    epoch still sees a different random order (as in transformers' LengthGroupedSampler).
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    size = batch_size * megabatch_factor
    batches = []
    for start in range(0, len(order), size):
        mega = sorted(order[start:start + size], key=lambda i: -lengths[i])
        batches += [mega[i:i + batch_size] for i in range(0, len(mega), batch_size)]
    rng.shuffle(batches)
    return batches


def eval_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Longest first, so the peak memory shows up in the first batch rather than at the end."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad(sequences: list[list[int]], value: int) -> list[list[int]]:
    width = max(len(s) for s in sequences)
    return [s + [value] * (width - len(s)) for s in sequences]
