"""Every registered task, walked from the registry (a task added later is covered without editing a list):
its YAML composes and validates, a bad value is refused with exit 2 and one line, `ftune predict`'s example
line featurises and collates with a tiny tokenizer, the predictions of a tiny model round-trip through JSON,
and its facts give the model card a pipeline tag."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ftune import registry
from ftune.errors import FtuneError
from tests.conftest import cli_exit_code

TASKS = sorted(registry.TASKS)
CONFIGS = Path(__file__).parents[2] / "configs" / "task"


def _bad_value(schema: type) -> tuple[str, object]:
    """A top-level field with a lower bound and a value below it (every task has one: a length)."""
    for spec in dataclasses.fields(schema):
        bounds = spec.metadata.get("range", {})
        low = bounds.get("ge") if bounds.get("ge") is not None else bounds.get("gt")
        if low is not None:
            return spec.name, int(low) - 1
    raise AssertionError(f"{schema.__name__} has no bounded field to test")


@pytest.mark.parametrize("name", TASKS)
def test_config_composes_and_validates(name, compose_config):
    from ftune.config import check_known_keys, check_values

    assert (CONFIGS / f"{name}.yaml").is_file(), f"configs/task/{name}.yaml is missing"
    cfg = compose_config("train", [f"task={name}"])
    check_known_keys(cfg)
    check_values(cfg)
    assert cfg.task.name == name


@pytest.mark.parametrize("name", TASKS)
def test_a_bad_value_is_one_line_and_exit_2(name, capsys):
    key, value = _bad_value(registry.TASKS[name].schema)
    assert cli_exit_code("train", f"task={name}", f"task.{key}={value}") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and f"task.{key}" in errors[0], errors


def _tokenizer_folder(task, request) -> Path:
    """The tiny model of the task's model family (by the Auto class it builds)."""
    fixture = {"AutoModelForCausalLM": "tiny_llama_dir", "AutoModelForSeq2SeqLM": "tiny_t5_dir"}
    return request.getfixturevalue(fixture.get(task.auto_class, "tiny_model_dir"))


@pytest.mark.parametrize("name", TASKS)
def test_example_featurises_predicts_and_round_trips(name, request):
    import torch

    from ftune.models import load_tokenizer
    from ftune.registry import defaults

    cfg = defaults("task", name)
    if "generation" in cfg:  # a few greedy tokens are enough to round-trip
        cfg.generation.max_new_tokens, cfg.generation.num_beams = 4, 1
    task = registry.build_task(cfg)
    folder = _tokenizer_folder(task, request)
    if task.has_labels and not task.labels:  # a label set as fit_labels would give (tagging: a valid IOB2 one)
        task.labels = ["O", "B-X", "I-X"]
        task.scheme = "IOB2" if task.scheme is not None else None
    tokenizer = load_tokenizer(str(folder))
    task.bind_tokenizer(tokenizer)
    examples = task.read_inputs([task.example_input])
    features = task.featurize(examples, tokenizer)
    assert features and all("example" in f and "length" in f for f in features)
    batch = {**task.collate(features), "index": list(range(len(features)))}
    model = task.build_model(str(folder)).eval()
    with torch.no_grad():
        outputs = None if task.generates else model(**batch["inputs"])
        if task.generates:
            batch["generated"] = task.generate(model, batch)
        predictions = task.decode(outputs, batch)
    rows = task.format_predictions(predictions, features, examples)
    assert len(rows) == len(examples)
    assert json.loads(json.dumps(rows)) == rows


@pytest.mark.parametrize("name", TASKS)
def test_card_has_the_tasks_pipeline_tag(name):
    from ftune.card import task_facts, usage

    facts = registry.TASKS[name].target
    assert task_facts(name) is facts and facts.pipeline_tag
    assert facts.auto_class in usage(name, "me/model", adapter=False) or facts.pipeline_task


def test_unknown_task_is_refused_with_the_registered_names():
    with pytest.raises(FtuneError, match="unknown task `nerr`.*did you mean `ner`"):
        registry.task_class("nerr")
