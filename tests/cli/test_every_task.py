"""Every task through the command line (in-process, to spare imports): train → eval → predict on tiny data."""

import json

import pytest

from ftune import registry
from tests.conftest import run_cli, write_data

pytestmark = pytest.mark.slow  # every task through the whole CLI (train → eval → predict): make test, not make test-unit

SENTENCES = ["a great and moving film", "dull , slow and far too long", "the best thing this year",
             "an awful mess", "warm , funny and wise", "nothing works here"] * 4
QA_CONTEXT = "The Denver Broncos defeated the Carolina Panthers to win Super Bowl 50 in Santa Clara ."


def _rows(task: str) -> list[dict]:
    if task == "classification":
        return [{"text": s, "label": "pos" if i % 2 == 0 else "neg"} for i, s in enumerate(SENTENCES)]
    if task == "pair_classification":
        return [{"text": s, "text_pair": SENTENCES[i - 1], "label": str(i % 2)} for i, s in enumerate(SENTENCES)]
    if task == "regression":
        return [{"text": s, "label": (i % 5) / 2} for i, s in enumerate(SENTENCES)]
    if task == "multilabel":
        return [{"text": s, "labels": ["film", "good"] if i % 2 == 0 else ["film"]} for i, s in enumerate(SENTENCES)]
    if task == "relation":
        return [{"text": f"Anna met Bob in Rome {s}", "head": [0, 4], "tail": [9, 12],
                 "label": "met" if i % 2 == 0 else "no_relation"} for i, s in enumerate(SENTENCES)]
    answers = [("Denver Broncos", "Who won?"), ("Santa Clara", "Where?"), ("Super Bowl 50", "Which game?")]
    return [{"id": str(i), "question": q, "context": QA_CONTEXT,
             "answers": [{"text": a, "answer_start": QA_CONTEXT.index(a)}]} for i, (a, q) in enumerate(answers * 4)]



@pytest.mark.parametrize("task", ["classification", "pair_classification", "regression", "multilabel",
                                  "relation", "qa", "ner"])
def test_train_eval_predict(task, tmp_path, tiny_model_dir, tiny_ner_data):
    run_dir = tmp_path / "run"
    if task == "ner":
        data = [f"task.data.train={tiny_ner_data['train']}", f"task.data.validation={tiny_ner_data['validation']}"]
        inputs = ["Angela Merkel visited Paris .", ""]
    else:
        path = tmp_path / "data.jsonl"
        rows = _rows(task)
        write_data(path, rows)
        data = [f"task.data.train={path}", f"task.data.validation={path}"]
        if task == "pair_classification":
            data.append("task.data.text_pair_column=text_pair")
        if task == "qa":  # windows within the tiny model's 128 positions (longer is refused at start-up)
            data += ["task.max_length=128", "task.doc_stride=32"]
        second = "great film\tawful film" if task == "pair_classification" else "not json at all"
        inputs = [json.dumps({k: v for k, v in rows[0].items() if k not in ("label", "labels", "answers")}), second]
    run_cli("train", f"task={task}", *data, f"model.name_or_path={tiny_model_dir}", "model.name=tiny",
           "trainer.max_steps=2", "trainer.batch_size=8", "logger.console=none", f"run_dir={run_dir}")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["task"] == task and "validation" in results
    assert (run_dir / "best" / "config.json").exists() and (run_dir / "best" / "tokenizer.json").exists()

    run_cli("eval", f"run_dir={run_dir}", "split=validation")
    evaluated = json.loads((run_dir / "eval_validation.json").read_text())
    key = registry.task_class(task).main_metric
    assert evaluated[key] == pytest.approx(results["validation"][key])

    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(inputs) + "\n")
    run_cli("predict", f"run_dir={run_dir}", f"input={source}", f"output={target}")
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == len(inputs)
    expected = {"ner": "entities", "classification": "label", "pair_classification": "label", "regression": "score",
                "multilabel": "labels", "relation": "relation", "qa": "answer"}[task]
    assert expected in rows[0]
