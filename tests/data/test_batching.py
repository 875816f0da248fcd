"""Batch orders and the feature cache: speed-ups that must not change results."""

import logging

import pytest
import torch
from omegaconf import OmegaConf

from ftune.data import cache
from ftune.data.batching import eval_batches, train_batches
from ftune.registry import defaults
from ftune.tasks.ner import NerTask


@pytest.mark.parametrize("group", [True, False])
def test_train_batches_cover_every_example_once_per_epoch(group):
    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    for epoch in range(3):
        batches = train_batches(lengths, 32, seed=7, epoch=epoch, group_by_length=group)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(1000)) and all(len(b) <= 32 for b in batches)
    def order(epoch):
        return [b.tolist() for b in train_batches(lengths, 32, 7, epoch, group)]

    assert order(0) == order(0)  # reproducible
    assert order(0) != order(1)  # new order per epoch


def _reference_order(lengths, batch_size, seed, epoch, group, factor=50):
    """The order as first written, with Python lists: the compact one must give exactly these batches (the
    recorded-loss test and every resumed run depend on it)."""
    import random

    rng = random.Random(seed * 1_000_003 + epoch)

    def permutation(n):
        order = list(range(n))
        rng.shuffle(order)
        return order

    def cut(order):
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    order = permutation(len(lengths))
    if not group:
        return cut(order)
    batches = []
    for start in range(0, len(order), batch_size * factor):
        batches += cut(sorted(order[start:start + batch_size * factor], key=lambda i: -lengths[i]))
    return [batches[i] for i in permutation(len(batches))]


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize(("count", "batch_size"), [(0, 8), (1, 8), (33, 1), (1601, 32), (5000, 7)])
def test_batches_equal_the_list_based_order_and_slice_and_join_like_lists(count, batch_size, group):
    lengths = [(i * 37) % 101 + 1 for i in range(count)]
    batches = train_batches(lengths, batch_size, 3, 1, group)
    expected = _reference_order(lengths, batch_size, 3, 1, group)
    assert [b.tolist() for b in batches] == expected and len(batches) == len(expected)
    assert [b.tolist() for b in batches[1::2]] == expected[1::2]
    assert [b.tolist() for b in batches + batches[:3]] == expected + expected[:3]
    assert batches.sizes().sum() == count


def test_length_grouping_cuts_padding_but_stays_random():
    lengths = [(i * 37) % 101 + 1 for i in range(2000)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = train_batches(lengths, 32, 0, 0, True)
    plain = train_batches(lengths, 32, 0, 0, False)
    assert padding(grouped) < padding(plain) / 5
    first_lengths = [max(lengths[i] for i in b) for b in grouped[:10]]
    assert first_lengths != sorted(first_lengths, reverse=True)  # batches are shuffled, not longest-first
    assert sorted(i for b in eval_batches(lengths, 64) for i in b) == list(range(2000))


@pytest.fixture
def ner_task_and_data(tiny_model_dir, tiny_ner_data):
    from transformers import AutoTokenizer

    task = NerTask(defaults("task", "ner"))
    examples = task.load_file(str(tiny_ner_data["train"]))
    task.fit_labels(examples, {})
    return task, examples, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_cached_features_equal_fresh_ones_and_skip_tokenisation(ner_task_and_data, tmp_path, monkeypatch, caplog):
    task, examples, tokenizer = ner_task_and_data
    monkeypatch.setenv("FTUNE_CACHE_DIR", str(tmp_path))
    fresh = task.featurize(examples, tokenizer)
    with caplog.at_level(logging.INFO, logger="ftune"):
        first = cache.featurize(task, examples, tokenizer, "train")
        calls = []
        monkeypatch.setattr(task, "featurize", lambda *a: calls.append(a) or [])
        second = cache.featurize(task, examples, tokenizer, "train")
    assert first.to_list() == fresh and second.to_list() == fresh and not calls
    assert "loaded from the cache" in caplog.text
    # Different settings or data give a different entry.
    other = NerTask(OmegaConf.merge(defaults("task", "ner"), {"max_length": 16}))
    other.labels = task.labels
    assert cache.fingerprint(other, examples, tokenizer) != cache.fingerprint(task, examples, tokenizer)
    assert cache.fingerprint(task, examples[:-1], tokenizer) != cache.fingerprint(task, examples, tokenizer)


def test_a_process_waiting_on_the_cache_lock_loads_what_the_holder_stored(ner_task_and_data, tmp_path, monkeypatch,
                                                                           caplog):
    """Parallel jobs and torchrun ranks tokenise once: the others wait on the entry's file lock, then load."""
    import threading

    from filelock import FileLock

    task, examples, tokenizer = ner_task_and_data
    monkeypatch.setenv("FTUNE_CACHE_DIR", str(tmp_path))
    folder = cache.cache_dir() / f"{task.name}-{cache.fingerprint(task, examples, tokenizer)}"
    folder.parent.mkdir(parents=True)
    holder = FileLock(str(folder) + ".lock")
    holder.acquire()  # another process is tokenising
    waited: list = []
    with caplog.at_level(logging.INFO, logger="ftune"):
        waiter = threading.Thread(target=lambda: waited.append(cache.featurize(task, examples, tokenizer, "train")))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not waited  # it waits (no collective, no timeout) ...
        stored = cache._load_or_build(task, examples, tokenizer, "train", folder)  # ... while the holder stores
        calls = []
        monkeypatch.setattr(task, "featurize", lambda *a: calls.append(a) or [])
        holder.release()
        waiter.join(timeout=30)
    assert [w.to_list() for w in waited] == [stored.to_list()] and not calls  # ... then loads the entry instead of tokenising again
    assert "another process is tokenising" in caplog.text


def test_padding_does_not_change_per_example_loss(ner_task_and_data, tiny_model_dir):
    """Dynamic padding groups examples of different lengths: each one's loss must not depend on its batch."""
    task, examples, tokenizer = ner_task_and_data
    features = task.featurize(examples[:6], tokenizer)
    model = task.build_model(str(tiny_model_dir)).eval()
    with torch.no_grad():
        alone = [task.loss(model(**(b := task.collate([f]))["inputs"]), b)[0] for f in features]
        batch = task.collate(features)
        outputs = model(**batch["inputs"])
        together = [task.loss(type("O", (), {"logits": outputs.logits[i:i + 1]}),
                              {"targets": {"labels": batch["targets"]["labels"][i:i + 1]}})[0]
                    for i in range(len(features))]
    assert len({f["length"] for f in features}) > 1  # the batch really is padded
    torch.testing.assert_close(torch.stack(together), torch.stack(alone), rtol=1e-4, atol=1e-5)
