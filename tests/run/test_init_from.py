"""init_from=<run | folder>: an earlier run's body weights in a new task's model, the head fresh unless the
label set matches, the chain in results.json and the card; an incompatible source is one line, exit 2."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import cli_exit_code, run_cli, write_data

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the sky is blue", "hello how are you today"]


def _classification_data(tmp_path):
    rows = [{"text": t, "label": "pos" if i % 2 else "neg"} for i, t in enumerate(TEXTS * 4)]
    return write_data(tmp_path / "cls.jsonl", rows)


def _args(model_dir, run_dir, *more):
    return ["train", f"model.name_or_path={model_dir}", "model.name=tiny", "trainer.max_steps=2",
            "trainer.batch_size=8", "logger.console=none", "trainer.cache_features=false", f"run_dir={run_dir}", *more]


@pytest.fixture(scope="module")
def mlm_run(tiny_model_dir, tmp_path_factory):
    """`ftune train task=mlm` on a small text file (the first step of the issue's two-step command)."""
    folder = tmp_path_factory.mktemp("init")
    corpus = write_data(folder / "corpus.txt", "\n".join(TEXTS * 10) + "\n")
    run_dir = folder / "mlm"
    run_cli(*_args(tiny_model_dir, run_dir, "task=mlm", f"task.data.train={corpus}", "task.max_length=16",
                   "optimizer.lr=5e-2", "logger.report=false"))
    return run_dir


@pytest.fixture(scope="module")
def tagger_folder(tiny_model_dir, tmp_path_factory):
    """A token-classification model folder (3 labels) whose weights differ from tiny_model_dir's."""
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=3, id2label={0: "O", 1: "B-X", 2: "I-X"},
                                        label2id={"O": 0, "B-X": 1, "I-X": 2})
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("tagger")
    BertForTokenClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def _body(state, prefix="bert."):
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix) and "pooler" not in k}


def test_tagger_into_classification_loads_body_keeps_fresh_head(tagger_folder, tiny_model_dir):
    from ftune import init_from as I
    from ftune.registry import build_task
    from ftune.registry import defaults as group_defaults

    task = build_task(group_defaults("task", "classification"))
    task.labels = ["neg", "pos"]
    model = task.build_model(str(tiny_model_dir))
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("classifier")}
    pooler = model.bert.pooler.dense.weight.detach().clone()
    head = I.load_into(model, I.resolve(str(tagger_folder)), task.labels, task.has_labels)
    source = load_file(str(tagger_folder / "model.safetensors"))
    loaded = _body(model.state_dict())
    assert head == "fresh" and _body(source)
    for key, value in _body(source).items():
        assert torch.equal(loaded[key], value), key
    original = load_file(str(tiny_model_dir / "model.safetensors"))  # the source's body is not the base's
    assert not torch.equal(loaded["embeddings.word_embeddings.weight"], original["embeddings.word_embeddings.weight"])
    for key, value in fresh_head.items():  # the classification head is the one built from model.name_or_path
        assert torch.equal(model.state_dict()[key], value)
    assert torch.equal(model.bert.pooler.dense.weight, pooler)  # a tagger has no pooler: the base's stays


def test_bare_encoder_folder_loads_too(tiny_model_dir):
    """A model folder saved without a task head (keys without the `bert.` prefix) is a source as well."""
    from ftune import init_from as I
    from ftune.registry import build_task
    from ftune.registry import defaults as group_defaults

    task = build_task(group_defaults("task", "ner"))
    task.labels = ["O", "B-X"]
    model = task.build_model(str(tiny_model_dir))
    torch.nn.init.zeros_(model.bert.embeddings.word_embeddings.weight)
    assert I.load_into(model, I.resolve(str(tiny_model_dir)), task.labels, True) == "fresh"
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, original["embeddings.word_embeddings.weight"])


@pytest.mark.slow
def test_mlm_run_into_classification_records_chain(mlm_run, tiny_model_dir, tmp_path):
    source = load_file(str(mlm_run / "best" / "model.safetensors"))
    run_dir = tmp_path / "cls"
    data = _classification_data(tmp_path)
    run_cli(*_args(tiny_model_dir, run_dir, "task=classification", f"task.data.train={data}",
                   f"task.data.validation={data}", f"init_from={mlm_run}", "freeze=head_only"))
    results = json.loads((run_dir / "results.json").read_text())
    record = results["init_from"]
    assert record["run"] == str(mlm_run) and record["task"] == "mlm" and record["head"] == "fresh"
    best = load_file(str(run_dir / "best" / "model.safetensors"))  # head only trained: the saved body is the mlm run's
    assert torch.equal(best["bert.encoder.layer.0.attention.self.query.weight"],
                       source["bert.encoder.layer.0.attention.self.query.weight"])
    card = (run_dir / "best" / "README.md").read_text()
    assert f"Initialised from run `{mlm_run}` (task mlm), with a freshly initialised head" in card
    original = load_file(str(tiny_model_dir / "model.safetensors"))  # the mlm run moved the body away from it
    assert not torch.equal(best["bert.embeddings.word_embeddings.weight"], original["embeddings.word_embeddings.weight"])
    assert str(tiny_model_dir) in card  # base: the original model, the intermediate run named



def test_chain_of_runs_is_recorded_newest_first(tagger_folder, tmp_path):
    """record() names the source run and nests that run's own init_from record; the card sentence lists both."""
    from ftune import init_from as I

    run = tmp_path / "second"
    (run / "best").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (run / "best" / name).write_bytes((tagger_folder / name).read_bytes())
    (run / "config.yaml").write_text("task: {name: ner}\nmodel: {name_or_path: some/model}\n")
    first = {"path": "/runs/mlm/best", "run": "/runs/mlm", "task": "mlm", "head": "fresh", "adapter": False}
    (run / "results.json").write_text(json.dumps({"init_from": first}))
    record = I.record(I.resolve(str(run)), "kept")
    assert record["run"] == str(run) and record["task"] == "ner" and record["model"] == "some/model"
    assert record["from"] == first and [e["task"] for e in I.chain(record)] == ["ner", "mlm"]
    assert I.describe(record) == (f"Initialised from run `{run}` (task ner) ← run `/runs/mlm` (task mlm), its head "
                                  "taken too (init_from).")


def test_same_labels_keep_head_other_labels_reset_it(tagger_folder, tiny_model_dir):
    from ftune import init_from as I
    from ftune.registry import build_task
    from ftune.registry import defaults as group_defaults

    source = I.resolve(str(tagger_folder))
    assert source.run is None and source.labels == ["O", "B-X", "I-X"]
    task = build_task(group_defaults("task", "ner"))
    task.labels = source.labels
    model = task.build_model(str(tiny_model_dir))
    assert I.load_into(model, source, task.labels, True) == "kept"
    saved = load_file(str(tagger_folder / "model.safetensors"))
    assert torch.equal(model.state_dict()["classifier.weight"], saved["classifier.weight"])
    task.labels = list(reversed(source.labels))  # same size, other order: the head would mean other labels
    model = task.build_model(str(tiny_model_dir))
    assert I.load_into(model, source, task.labels, True) == "fresh"
    assert not torch.equal(model.state_dict()["classifier.weight"], saved["classifier.weight"])


@pytest.mark.slow
def test_incompatible_source_is_one_line_exit_2(tiny_model_dir, tiny_llama_dir, tmp_path, capsys):
    data = _classification_data(tmp_path)
    base = _args(tiny_model_dir, tmp_path / "bad", "task=classification", f"task.data.train={data}")
    assert cli_exit_code(*base, f"init_from={tiny_llama_dir}") == 2  # another architecture
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig.from_pretrained(tiny_model_dir)
    config.vocab_size += 7  # same architecture, another vocabulary
    BertForMaskedLM(config).save_pretrained(tmp_path / "other-vocab")
    assert cli_exit_code(*base, f"init_from={tmp_path / 'other-vocab'}") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "init_from" in line]
    assert any("vocabulary mismatch" in line for line in lines), err
    assert any("llama" in line for line in lines) and not (tmp_path / "bad" / "results.json").exists()
