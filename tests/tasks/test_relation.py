"""Relation extraction: entity markers, spans from offsets or tokens, cropping, micro-F1 without no_relation."""


import pytest
from omegaconf import OmegaConf

from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks.relation import RelationTask, crop, mark
from tests.conftest import write_data

ROWS = [
    {"text": "Bill Gates founded Microsoft in Albuquerque .", "head": [0, 10], "tail": [19, 28], "label": "founded"},
    {"tokens": ["Paris", "is", "the", "capital", "of", "France", "."], "head": [0, 1], "tail": [5, 6],
     "label": "capital_of"},
    {"text": "Anna met Bob in Rome .", "head": [0, 4], "tail": [16, 20], "label": "no_relation"},
    {"text": "Bob lives in Berlin .", "head": [0, 3], "tail": [13, 19], "label": "lives_in"},
]


def make_task(**overrides) -> RelationTask:
    return RelationTask(OmegaConf.merge(defaults("task", "relation"), overrides))


def test_markers_from_offsets_and_from_tokens(tmp_path):
    examples = make_task().load_file(str(write_data(tmp_path / "rel.jsonl", ROWS)))
    assert examples[0]["text"] == "[E1] Bill Gates [/E1] founded [E2] Microsoft [/E2] in Albuquerque ."
    assert examples[1]["text"] == "[E1] Paris [/E1] is the capital of [E2] France [/E2] ."
    assert mark("a b c", (4, 5), (0, 1)) == "[E2] a [/E2] b [E1] c [/E1]"  # tail before head


def test_bad_spans_are_reported_with_file_and_line(tmp_path):
    bad = [{"text": "short", "head": [0, 3], "tail": [2, 5], "label": "x"},
           {"text": "short", "head": [0, 30], "tail": [0, 1], "label": "x"},
           {"tokens": ["a"], "head": [0, 1], "label": "x"}]
    with pytest.raises(FtuneError) as error:
        make_task().load_file(str(write_data(tmp_path / "rel.jsonl", bad)))
    message = error.value.one_line()
    assert ":1: head and tail overlap" in message and ":2: entity offset beyond" in message
    assert ":3: `tail` must be [start, end)" in message


def test_markers_become_tokens_and_long_sentences_are_cropped_around_entities(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = make_task(max_length=16)
    before = len(tokenizer)
    task.bind_tokenizer(tokenizer)
    assert len(tokenizer) == before + 4 and task.vocab_size == len(tokenizer)
    assert tokenizer.tokenize("[E1] paris [/E1]") == ["[E1]", "paris", "[/E1]"]
    text = "the " * 30 + "Paris is in France" + " and more words" * 20
    head = (text.index("Paris"), text.index("Paris") + 5)
    tail = (text.index("France"), text.index("France") + 6)
    cropped = crop(tokenizer, text, head, tail, 14)
    assert "[E1] Paris [/E1]" in cropped and "[E2] France [/E2]" in cropped
    assert len(tokenizer.tokenize(cropped)) <= 14


def test_micro_f1_leaves_out_no_relation(tmp_path):
    task = make_task()
    examples = task.load_file(str(write_data(tmp_path / "rel.jsonl", ROWS)))
    task.fit_labels(examples, {})
    ids = {label: i for i, label in enumerate(task.labels)}
    features = [{"example": i} for i in range(4)]
    guesses = ["founded", "no_relation", "lives_in", "lives_in"]  # right, missed, spurious, right
    predictions = [(ids[g], [1.0 if j == ids[g] else 0.0 for j in range(len(ids))]) for g in guesses]
    metrics = task.compute_metrics(predictions, features, examples)
    # non-NA predictions 3, correct 2; non-NA gold 3 → P = R = F1 = 2/3; accuracy 2/4
    assert metrics["micro_precision"] == pytest.approx(2 / 3) and metrics["micro_recall"] == pytest.approx(2 / 3)
    assert metrics["micro_f1"] == pytest.approx(2 / 3) and metrics["accuracy"] == pytest.approx(0.5)
    everything = make_task(no_relation=None)
    everything.fit_labels(examples, {})
    assert everything.compute_metrics(predictions, features, examples)["micro_f1"] == pytest.approx(0.5)
