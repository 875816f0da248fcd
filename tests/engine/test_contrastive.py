"""objective=setfit (ftune/engine/contrastive.py, issue 29): the pair sampler's balance, and a tiny run that
saves, evaluates and predicts through the usual commands."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ftune.engine.contrastive import sample_pairs
from tests.conftest import cli_exit_code, run_cli, write_data


def test_pairs_are_half_positive_and_labelled_right():
    labels = [0] * 5 + [1] * 3 + [2] * 8  # unbalanced, three classes
    pairs = sample_pairs(labels, iterations=20, seed=0)
    assert len(pairs) == 2 * 20 * len(labels)
    assert Counter(t for _, _, t in pairs) == {1.0: 20 * len(labels), 0.0: 20 * len(labels)}
    for i, j, target in pairs:
        assert i != j and (labels[i] == labels[j]) == (target == 1.0)
    assert Counter(i for i, _, _ in pairs) == {i: 40 for i in range(len(labels))}  # every example, every iteration
    assert sample_pairs(labels, 20, seed=0) == pairs and sample_pairs(labels, 20, seed=1) != pairs


def test_a_label_with_one_example_gets_no_positive_pair():
    pairs = sample_pairs([0, 1, 1], iterations=2, seed=0)
    assert not [p for p in pairs if p[0] == 0 and p[2] == 1.0]
    assert len([p for p in pairs if p[0] == 0 and p[2] == 0.0]) == 2


@pytest.mark.slow  # trains, evaluates and predicts through the CLI, in-process (~10 s)
def test_setfit_run_saves_evals_and_predicts(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"text": f"good nice film {i}", "label": "pos"} for i in range(8)] + \
        [{"text": f"bad awful film {i}", "label": "neg"} for i in range(8)]
    data = write_data(tmp_path / "train.jsonl", rows)
    run_dir = tmp_path / "run"
    run_cli("train", "task=classification", f"task.data.train={data}", f"task.data.validation={data}",
            f"model.name_or_path={tiny_model_dir}", "model.name=tiny", "objective=setfit", "objective.num_iterations=2",
            "trainer.epochs=1", "trainer.batch_size=8", "logger.console=none", f"run_dir={run_dir}")
    results = json.loads((run_dir / "results.json").read_text())
    config = json.loads((run_dir / "best" / "config.json").read_text())
    assert config["model_type"] == "ftune_sentence_classifier"
    assert results["parameters"]["trainable"] < results["parameters"]["total"] / 10  # the body is frozen
    from ftune import sentence_classifier

    sentence_classifier.register.cache_clear()  # as in a fresh process: eval registers the class itself
    from transformers.models.auto import configuration_auto, modeling_auto

    monkeypatch.delitem(configuration_auto.CONFIG_MAPPING._extra_content, "ftune_sentence_classifier")
    monkeypatch.delitem(modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING._extra_content,
                        sentence_classifier.SentenceClassifierConfig)
    run_cli("eval", f"run_dir={run_dir}")
    evaluated = json.loads((run_dir / "eval_validation.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(results["validation"]["accuracy"])
    write_data(tmp_path / "in.txt", "good nice film\nbad awful film\n")
    run_cli("predict", f"run_dir={run_dir}", f"input={tmp_path / 'in.txt'}", f"output={tmp_path / 'out.jsonl'}")
    predicted = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [p["label"] in ("pos", "neg") for p in predicted] == [True, True]


def test_setfit_refuses_a_task_that_is_not_a_classifier(tmp_path, tiny_model_dir, tiny_ner_data):
    code = cli_exit_code("train", "task=ner", f"task.data.train={tiny_ner_data['train']}",
                         f"model.name_or_path={tiny_model_dir}", "objective=setfit", "logger.console=none",
                         f"run_dir={tmp_path / 'run'}")
    assert code == 2
