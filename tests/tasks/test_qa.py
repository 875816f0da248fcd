"""Extractive QA: SQuAD normalisation and scores, span labels across windows, answer assembly, validation."""

import json
import string
from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf

from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks.generation import normalize_answer, token_f1
from ftune.tasks.qa import QaTask
from tests.conftest import run_cli, write_data

CONTEXT = ("The Denver Broncos defeated the Carolina Panthers 24 to 10 to earn their third Super Bowl title . "
           "The game was played on February 7 , 2016 , at Levi 's Stadium in Santa Clara , California .")


def squad_file(tmp_path, questions, name="squad.json"):
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": questions}]}]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def qa(question, answer, qid):
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": CONTEXT.index(answer)}]}


def make_task(**overrides) -> QaTask:
    return QaTask(OmegaConf.merge(defaults("task", "qa"), overrides))


def test_official_normalisation_and_f1():
    assert normalize_answer("The  Denver, Broncos!") == "denver broncos"
    assert token_f1("Denver Broncos", "the Denver Broncos") == 1.0
    assert token_f1("Broncos won", "Denver Broncos") == pytest.approx(0.5)  # P 1/2, R 1/2
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_reading_and_validating_squad(tmp_path):
    task = make_task()
    path = squad_file(tmp_path, [qa("Who won?", "Denver Broncos", "a"), qa("Where?", "Santa Clara", "b")])
    examples = task.load_file(str(path))
    assert [e["id"] for e in examples] == ["a", "b"] and examples[1]["answers"][0]["text"] == "Santa Clara"
    task.fit_labels(examples, {})
    assert task.version_2 is False
    broken = [qa("Who won?", "Denver Broncos", "a"), {**qa("Again?", "Denver Broncos", "a")}]
    broken[1]["answers"][0]["answer_start"] += 1
    with pytest.raises(FtuneError) as error:
        task.fit_labels(task.load_file(str(squad_file(tmp_path, broken, "bad.json"))), {})
    message = error.value.one_line()
    assert "duplicate question id `a`" in message and "is not found at" in message and "qas[1]" in message


def test_span_labels_follow_the_answer_across_windows(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = make_task(max_length=24, doc_stride=8)
    examples = task.load_file(str(squad_file(tmp_path, [qa("Where was the game?", "Santa Clara", "q")])))
    features = task.featurize(examples, tokenizer)
    assert len(features) > 2 and all(f["length"] <= 24 for f in features)
    labelled = [f for f in features if f["start"] > 0]
    assert labelled, "some window holds the answer"
    for feature in labelled:
        begin, end = feature["offsets"][feature["start"]][0], feature["offsets"][feature["end"]][1]
        assert CONTEXT[begin:end] == "Santa Clara"
    assert all(f["start"] == f["end"] == 0 for f in features if f not in labelled)  # CLS when absent


def test_answers_are_assembled_over_windows_and_scored(tiny_model_dir, tmp_path):
    """Logits that point at the gold span in one window must give EM 100, whatever the other windows say."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = make_task(max_length=24, doc_stride=8)
    examples = task.load_file(str(squad_file(tmp_path, [qa("Where was the game?", "Santa Clara", "q")])))
    task.fit_labels(examples, {})
    features = task.featurize(examples, tokenizer)
    batch = task.collate(features)
    start = torch.zeros(batch["inputs"]["input_ids"].shape)
    end = torch.zeros_like(start)
    for row, feature in enumerate(features):
        if feature["start"] > 0:
            start[row, feature["start"]], end[row, feature["end"]] = 9.0, 9.0
        else:  # distractor: a confident but wrong span elsewhere, scoring lower
            first = next(i for i, o in enumerate(feature["offsets"]) if o is not None)
            start[row, first], end[row, first] = 5.0, 5.0

    class Out:
        start_logits, end_logits = start, end

    predictions = task.decode(Out, batch)
    metrics = task.compute_metrics(predictions, features, examples)
    assert metrics == {"exact": 100.0, "f1": 100.0, "questions": 1}
    (row,) = task.format_predictions(predictions, features, examples)
    assert row["answer"] == "Santa Clara" and CONTEXT[row["start"]:row["end"]] == "Santa Clara"


def test_qa_trains_end_to_end_with_the_tiny_model(compose_config, tiny_model_dir, tmp_path):
    from ftune.commands import train

    questions = [qa("Who won?", "Denver Broncos", "a"), qa("Where?", "Santa Clara", "b"),
                 qa("When?", "February 7 , 2016", "c"), qa("Which title?", "third Super Bowl title", "d")]
    path = squad_file(tmp_path, questions)
    cfg = compose_config("train", [f"model.name_or_path={tiny_model_dir}", "model.name=tiny", "task=qa",
                                   f"task.data.train={path}", f"task.data.validation={path}", "task.max_length=48",
                                   "task.doc_stride=16", "trainer.max_steps=3", "trainer.batch_size=4",
                                   "logger.console=none", f"run_dir={tmp_path / 'run'}"])
    results = train.run(cfg)
    assert results["validation"]["questions"] == 4
    assert (tmp_path / "run" / "best" / "model.safetensors").exists()
    # The reported scores are the SQuAD scores of what the trained model answers: predict the same questions with
    # best/ and score the answers here, by the SQuAD v1.1 definition written out (not through the task's metric code).
    source, target = tmp_path / "questions.jsonl", tmp_path / "answers.jsonl"
    write_data(source, [{"id": q["id"], "question": q["question"], "context": CONTEXT} for q in questions])
    run_cli("predict", f"run_dir={tmp_path / 'run'}", f"input={source}", f"output={target}")
    answers = {row["id"]: row["answer"] for row in map(json.loads, target.read_text().splitlines())}
    assert sorted(answers) == ["a", "b", "c", "d"]

    def words(text: str) -> list[str]:
        text = "".join(c for c in text.lower() if c not in string.punctuation)
        return [w for w in text.split() if w not in ("a", "an", "the")]

    def f1(predicted: str, gold: str) -> float:
        common = sum((Counter(words(predicted)) & Counter(words(gold))).values())
        if not words(predicted) or not words(gold):
            return float(words(predicted) == words(gold))
        return 0.0 if common == 0 else 2 * common / (len(words(predicted)) + len(words(gold)))

    gold = {q["id"]: q["answers"][0]["text"] for q in questions}
    expected_f1 = 100 * sum(f1(answers[i], gold[i]) for i in gold) / len(gold)
    expected_exact = 100 * sum(words(answers[i]) == words(gold[i]) for i in gold) / len(gold)
    assert results["validation"]["f1"] == pytest.approx(expected_f1, abs=1e-6)
    assert results["validation"]["exact"] == pytest.approx(expected_exact, abs=1e-6)
