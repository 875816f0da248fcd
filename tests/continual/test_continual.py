"""Continual learning's parts (ftune/continual/): label-set extension, replay share, L2-SP and EWC terms, the
Fisher file, and the start-up refusals of the `continual` group (one line, exit 2)."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from ftune.continual import fisher as F
from ftune.continual import heads, penalties, replay
from ftune.run_dir import RunDir
from tests.conftest import cli_exit_code, write_data

OLD = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]


# ---- label-set extension ---------------------------------------------------------------------------------
def test_union_keeps_the_old_ids_and_appends_the_new_labels():
    new = ["B-MISC", "B-ORG", "I-MISC", "I-ORG", "O"]
    labels = heads.union_labels(OLD, new)
    assert labels[:5] == OLD and labels[5:] == ["B-MISC", "B-ORG", "I-MISC", "I-ORG"]
    assert heads.grows(OLD, labels) and not heads.grows(OLD, OLD) and heads.union_labels(OLD, OLD[:2]) == OLD


def test_grown_head_keeps_old_rows_bit_identical_and_old_predictions(tiny_model_dir):
    from transformers import AutoModelForTokenClassification

    labels = heads.union_labels(OLD, ["B-ORG", "I-ORG", "O"])
    torch.manual_seed(1)
    old = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=len(OLD)).eval()
    torch.manual_seed(2)
    new = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=len(labels)).eval()
    fresh = new.classifier.weight.detach().clone()
    state = old.state_dict()
    body = {k for k in new.state_dict() if k.startswith("bert.")}
    head = heads.grown_state(new.state_dict(), state, OLD, labels, body)
    new.load_state_dict({**{k: state[k] for k in body}, **head}, strict=False)
    assert torch.equal(new.classifier.weight[:len(OLD)], old.classifier.weight)  # bit for bit
    assert torch.equal(new.classifier.bias[:len(OLD)], old.classifier.bias)
    assert torch.equal(new.classifier.weight[len(OLD):], fresh[len(OLD):])  # new rows: the fresh initialisation
    ids = torch.randint(5, 60, (4, 12))
    with torch.no_grad():
        before, after = old(input_ids=ids).logits, new(input_ids=ids).logits
    torch.testing.assert_close(after[..., :len(OLD)], before, rtol=0, atol=1e-6)
    assert torch.equal(after[..., :len(OLD)].argmax(-1), before.argmax(-1))  # old labels: same predictions
    assert heads.output_rows(new, len(labels)) == {"classifier.weight": len(labels), "classifier.bias": len(labels)}


def test_init_from_a_run_of_the_same_task_extends_its_head(tiny_model_dir, tmp_path):
    """The path `ftune train init_from=<stage-1 run>` takes: the union's ids, the old rows, the old predictions."""
    from transformers import AutoModelForTokenClassification

    from ftune import init_from
    from ftune.continual import stage
    from ftune.registry import build_task

    run = tmp_path / "stage1"
    run.mkdir()
    OmegaConf.save(OmegaConf.create({"task": {"name": "ner"}, "model": {"name_or_path": str(tiny_model_dir)}}),
                   run / "config.yaml")
    torch.manual_seed(3)
    old = AutoModelForTokenClassification.from_pretrained(
        tiny_model_dir, num_labels=len(OLD), id2label=dict(enumerate(OLD)), label2id={k: i for i, k in enumerate(OLD)})
    old.save_pretrained(run / "best")
    source = init_from.resolve(str(run))
    task = build_task(OmegaConf.create({"name": "ner", "scheme": "IOB2", "data": {}}))
    splits = {"train": [{"tokens": ["EU", "x"], "tags": ["B-ORG", "O"], "where": "t:1"}],
              "validation": [{"tokens": ["Bonn"], "tags": ["B-LOC"], "where": "v:1"}]}  # an old label: accepted
    added = stage.fit_labels(task, splits, stage.same_task_labels(source, task))
    assert task.labels == [*OLD, "B-ORG"] and added == ["B-ORG"]
    new = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=len(task.labels)).eval()
    assert init_from.load_into(new, source, task.labels, True) == "extended"
    assert torch.equal(new.classifier.weight[:len(OLD)], old.classifier.weight)
    ids = torch.randint(5, 60, (3, 9))
    with torch.no_grad():
        before, after = old.eval()(input_ids=ids).logits, new(input_ids=ids).logits
    assert torch.equal(after[..., :len(OLD)].argmax(-1), before.argmax(-1))


# ---- replay ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_replay_share_is_the_ratio_and_seeded(ratio):
    new = [{"length": 5, "example": i, "source": "new"} for i in range(900)]
    earlier = [{"length": 5, "example": i, "source": "old"} for i in range(400)]
    mixed, added = replay.mix(new, earlier, ratio, seed=7)
    share = sum(f["source"] == "old" for f in mixed) / len(mixed)
    assert added == replay.replay_count(900, ratio) and abs(share - ratio) < 0.01
    again, _ = replay.mix(new, earlier, ratio, seed=7)
    other, _ = replay.mix(new, earlier, ratio, seed=8)
    assert again == mixed and other != mixed  # seeded: the same sample for the same seed only
    picked = [f["example"] for f in mixed if f["source"] == "old"]
    assert len(set(picked)) == len(picked)  # without replacement while there are enough


def test_replay_repeats_earlier_features_only_when_there_are_too_few():
    indices = replay.sample(3, 7, seed=0)
    assert sorted(indices.tolist()).count(0) >= 2 and len(indices) == 7 and set(indices.tolist()) == {0, 1, 2}


def test_replay_mixes_memory_mapped_features():
    import datasets

    new = datasets.Dataset.from_list([{"input_ids": [1, 2], "length": 2}] * 90)
    earlier = datasets.Dataset.from_list([{"input_ids": [3, 4, 5], "length": 3}] * 50)
    mixed, added = replay.mix(new, earlier, 0.1, seed=0)
    assert added == 10 and len(mixed) == 100 and sum(mixed["length"]) == 90 * 2 + 10 * 3


# ---- L2-SP and EWC -------------------------------------------------------------------------------------------
def test_l2sp_is_zero_at_the_start_and_grows_with_the_distance():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    term = penalties.AnchorPenalty(model, 0.1, penalties.anchors_of(model, {}, set()))
    assert term().item() == 0.0
    values = []
    for shift in (0.01, 0.1, 0.5):
        with torch.no_grad():
            model.weight.copy_(term.terms[0][2] + shift)  # every weight moved by `shift`, the bias not
        values.append(term().item())
        assert values[-1] == pytest.approx(0.5 * 0.1 * shift ** 2 * 12, rel=1e-5)
    assert values == sorted(values)
    model.zero_grad()
    term().backward()  # its gradient: strength · (w − w₀)
    torch.testing.assert_close(model.weight.grad, torch.full((3, 4), 0.1 * 0.5))


def test_anchor_of_an_extended_head_covers_only_the_old_rows():
    model = torch.nn.Linear(4, 5)
    anchors = penalties.anchors_of(model, {"weight": 3, "bias": 3}, set())
    term = penalties.AnchorPenalty(model, 1.0, anchors)
    with torch.no_grad():
        model.weight[3:] += 10.0  # the new rows move: nothing to pull back
    assert term().item() == 0.0
    with torch.no_grad():
        model.bias[0] += 1.0
    assert term().item() == pytest.approx(0.5)


class _ToyTask:
    """collate/forward as a task's, over a linear classifier."""

    def collate(self, features):
        return {"inputs": {"x": torch.tensor([f["x"] for f in features])},
                "targets": {"y": torch.tensor([f["y"] for f in features])}}

    def forward(self, model, batch):
        logits = model(batch["inputs"]["x"])
        loss = torch.nn.functional.cross_entropy(logits, batch["targets"]["y"], reduction="sum")
        return logits, loss, torch.tensor(len(logits))


def test_ewc_fisher_is_non_negative_scaled_to_mean_one_and_weights_the_penalty():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    features = [{"x": torch.randn(6).tolist(), "y": i % 3} for i in range(40)]
    fisher = penalties.diagonal_fisher(model, _ToyTask(), features, 8, "cpu", 32)
    values = torch.cat([f.flatten() for f in fisher.values()])
    assert (values >= 0).all() and values.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind for the first training step
    term = penalties.AnchorPenalty(model, 2.0, penalties.anchors_of(model, {}, set()), fisher)
    with torch.no_grad():
        model.weight += 0.1
    expected = 0.5 * 2.0 * (fisher["weight"] * 0.01).sum().item()
    assert term().item() == pytest.approx(expected, rel=1e-5)


def test_ewc_fisher_is_computed_once_and_stored_in_the_earlier_run(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "stage1")
    (tmp_path / "stage1").mkdir()
    data = write_data(tmp_path / "train.conll", "EU B-ORG\n")
    calls = []

    def compute(*args):
        calls.append(args)
        return {"w": torch.rand(3, 2)}

    monkeypatch.setattr(F, "compute", compute)
    cfg = OmegaConf.create({"continual": {"fisher_examples": 100}, "trainer": {"batch_size": 4}})
    first = F.earlier_fisher(run, tmp_path / "stage1" / "best", str(data), cfg, "cpu")
    second = F.earlier_fisher(run, tmp_path / "stage1" / "best", str(data), cfg, "cpu")
    assert len(calls) == 1 and F.fisher_path(run).is_file() and torch.equal(first["w"], second["w"])
    cfg.continual.fisher_examples = 50  # other settings: computed again
    F.earlier_fisher(run, tmp_path / "stage1" / "best", str(data), cfg, "cpu")
    assert len(calls) == 2


# ---- pseudo-labels (background shift) ----------------------------------------------------------------------
def _ner_task(scheme: str, labels: list[str]):
    from ftune.tasks.ner import NerTask

    task = NerTask(OmegaConf.create({"name": "ner", "scheme": scheme}))
    task.labels = labels
    return task


def _entities(*spans) -> list[dict]:
    return [{"type": kind, "start_token": first, "end_token": end} for kind, first, end in spans]


@pytest.mark.parametrize("scheme, tags, predicted, expected, count", [
    # IOB2: a PER entity on O words is written in; one over a gold ORG word is not
    ("IOB2", ["O", "O", "O", "B-ORG", "O"], [("PER", 0, 2), ("LOC", 3, 5)], ["B-PER", "I-PER", "O", "B-ORG", "O"], 1),
    # IOB1 starts an entity with I-, and with B- right after an entity of the same type
    ("IOB1", ["O", "O", "O", "O"], [("PER", 0, 1), ("PER", 1, 3)], ["I-PER", "B-PER", "I-PER", "O"], 2),
    # IOB1: an entity right before a gold I-LOC of its type would join it: left out
    ("IOB1", ["O", "I-LOC", "O"], [("LOC", 0, 1)], ["O", "I-LOC", "O"], 0),
    ("BIOES", ["O", "O", "O", "S-ORG"], [("LOC", 0, 1), ("PER", 1, 3)], ["S-LOC", "B-PER", "E-PER", "S-ORG"], 2),
])
def test_pseudo_labels_fill_only_o_words_in_the_data_scheme(scheme, tags, predicted, expected, count):
    labels = ["O"] + [f"{p}-{k}" for k in ("LOC", "ORG", "PER") for p in ("B", "I", "E", "S")]
    task = _ner_task(scheme, labels)
    examples = [{"tokens": [f"w{i}" for i in range(len(tags))], "tags": tags, "where": "f:1"},
                {"tokens": ["x"], "tags": ["O"], "where": "f:3"}]
    seen = []

    def predict(inputs):
        seen.extend(inputs)
        return [{"entities": _entities(*predicted)}, {"entities": []}]

    out, added = task.pseudo_label(examples, predict)
    assert [ex["tags"] for ex in out] == [expected, ["O"]]
    assert added == count
    assert all(set(i) == {"tokens"} for i in seen)  # the earlier model sees inputs, never the new tags
    assert examples[0]["tags"] == tags and out[1] is examples[1]  # the input is not changed; unchanged rows shared


def test_pseudo_labels_need_a_label_of_this_run():
    task = _ner_task("IOB2", ["O", "B-ORG", "I-ORG", "B-PER"])  # no I-PER: a two-word PER cannot be written
    examples = [{"tokens": ["a", "b", "c"], "tags": ["O", "O", "O"]}]
    out, added = task.pseudo_label(examples, lambda inputs: [{"entities": _entities(("PER", 0, 2), ("PER", 2, 3))}])
    assert out[0]["tags"] == ["O", "O", "B-PER"] and added == 1


# ---- refusals: one line, exit 2 -------------------------------------------------------------------------------
def _fake_run(folder, task: str):
    folder.mkdir()
    OmegaConf.save(OmegaConf.create({"task": {"name": task}, "model": {"name_or_path": "x"}}), folder / "config.yaml")
    (folder / "results.json").write_text(json.dumps({"validation": {"accuracy": 0.9}, "main_metric": "accuracy"}))
    return folder


def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("ftune: error:")]


def _settings(**continual) -> OmegaConf:
    base = {"previous": [], "replay": None, "replay_ratio": 0.1, "regularizer": "none", "strength": 0.0,
            "fisher_examples": 10, "adapter": None, "pseudo_label": False,
            "every_eval": False}
    peft, task = continual.pop("peft", "none"), continual.pop("task", "ner")
    return OmegaConf.create({"task": {"name": task}, "peft": {"name": peft}, "model": {"name_or_path": "x"},
                             "continual": {**base, **continual}})


@pytest.mark.parametrize("case", ["ewc_without_earlier", "previous_of_another_task", "previous_not_a_run",
                                  "replay_run_of_another_task", "adapter_without_peft", "regularizer_with_peft",
                                  "pseudo_label_without_earlier_run", "pseudo_label_of_classification",
                                  "every_eval_without_previous"])
def test_bad_continual_settings_are_refused_before_anything_loads(case, tmp_path):
    from ftune.continual import stage
    from ftune.errors import FtuneError

    other = str(_fake_run(tmp_path / "sst2-run", "classification"))
    cfg = {"ewc_without_earlier": _settings(regularizer="ewc"),
           "previous_of_another_task": _settings(previous=[other]),
           "previous_not_a_run": _settings(previous=[str(tmp_path)]),
           "replay_run_of_another_task": _settings(replay=other),
           "adapter_without_peft": _settings(adapter="s2"),
           "regularizer_with_peft": _settings(regularizer="l2sp", peft="lora"),
           "pseudo_label_without_earlier_run": _settings(pseudo_label=True),
           "pseudo_label_of_classification": _settings(pseudo_label=True, task="classification"),
           "every_eval_without_previous": _settings(every_eval=True)}[case]
    with pytest.raises(FtuneError) as error:
        stage.check(cfg, None)
    assert error.value.where.startswith("continual.") and "\n" not in str(error.value)


@pytest.mark.slow  # the CLI in-process
def test_ewc_without_earlier_data_is_one_line_and_exit_2(tiny_train_overrides, tmp_path, capsys):
    assert cli_exit_code("train", *tiny_train_overrides, "continual=ewc") == 2
    err = _errors(capsys)
    assert len(err) == 1 and "continual.regularizer" in err[0] and "init_from" in err[0]
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing half-written


@pytest.mark.slow
@pytest.mark.parametrize("case", ["another_scheme", "another_task"])
def test_replay_data_of_another_scheme_or_task_is_refused(case, tiny_train_overrides, tmp_path, capsys):
    if case == "another_scheme":  # BIOES tags where the run's data is IOB2
        replayed = write_data(tmp_path / "replay.conll", "Paris S-LOC\nis O\nnice O\n")
    else:  # a text classification file
        replayed = write_data(tmp_path / "replay.jsonl", [{"text": "great film", "label": "positive"}])
    assert cli_exit_code("train", *tiny_train_overrides, f"continual.replay={replayed}") == 2
    err = _errors(capsys)
    assert len(err) == 1 and "replay" in err[0]
    assert not (tmp_path / "run" / "config.yaml").exists()
