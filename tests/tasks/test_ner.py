"""NER task: tag schemes, sub-word alignment, windows over long sentences, metrics against hand counts."""

import pytest
from omegaconf import OmegaConf

from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks import tag_schemes as ts
from ftune.tasks.ner import NerTask, plan_windows


def make_task(**overrides) -> NerTask:
    cfg = OmegaConf.merge(defaults("task", "ner"), overrides)
    return NerTask(cfg)


def example(tokens: str, tags: str) -> dict:
    return {"tokens": tokens.split(), "tags": tags.split(), "where": "test:1"}


# ---- tag schemes ---------------------------------------------------------------------------------------
def test_to_iob2_reads_iob1_bioes_and_ill_formed_predictions():
    assert ts.to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert ts.to_iob2(["B-PER", "E-PER", "S-PER", "S-LOC", "O"]) == ["B-PER", "I-PER", "B-PER", "B-LOC", "O"]
    assert ts.to_iob2(["O", "I-ORG", "I-PER"]) == ["O", "B-ORG", "B-PER"]


def test_detect_scheme():
    assert ts.detect_scheme([["B-PER", "I-PER", "O"]]) == "IOB2"
    assert ts.detect_scheme([["I-PER", "I-PER", "O"]]) == "IOB1"
    assert ts.detect_scheme([["S-PER", "O"], ["B-LOC", "E-LOC"]]) == "BIOES"


def test_entities_spans():
    assert ts.entities(["B-PER", "I-PER", "O", "S-LOC", "B-ORG"]) == [("PER", 0, 1), ("LOC", 3, 3), ("ORG", 4, 4)]


def test_labels_are_checked_with_file_and_line():
    task = make_task()
    train = [example("Paris is", "B-LOC O")]
    with pytest.raises(FtuneError, match=r"dev:7: label `B-PER` does not occur in the training data"):
        task.fit_labels(train, {"validation": [{**example("Bob", "B-PER"), "where": "dev:7"}]})
    with pytest.raises(FtuneError, match=r"tag `LOC` is not O or B-/I-/E-/S-<TYPE>"):
        task.fit_labels([example("Paris", "LOC")], {})
    with pytest.raises(FtuneError, match="training split is empty"):
        task.fit_labels([], {})


# ---- features ------------------------------------------------------------------------------------------
def test_first_subtoken_carries_the_label(tokenizer):
    task = make_task()
    ex = example("Paris rejected Germans", "B-LOC O B-MISC")
    task.fit_labels([ex], {})
    (feature,) = task.featurize([ex], tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    label = {i: task.labels[l] for i, l in enumerate(feature["labels"]) if l != -100}
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert [pieces[i] for i in label] == [tokenizer.tokenize(w)[0] for w in ex["tokens"]]
    assert [label[i] for i in sorted(label)] == ex["tags"]
    first_positions = [i for i, w in enumerate(feature["words"]) if w >= 0]
    assert [feature["words"][i] for i in first_positions] == [0, 1, 2]
    assert sorted(label) == first_positions  # exactly one label per word


def test_label_all_tokens_continues_b_as_i_and_metrics_still_read_first_subtoken(tokenizer):
    task = make_task(label_all_tokens=True)
    ex = example("Parisians", "B-PER")  # not in the vocab: splits into paris + sub-word pieces
    task.fit_labels([example("Parisians Bob", "B-PER I-PER")], {})
    (feature,) = task.featurize([ex], tokenizer)
    labelled = [task.labels[l] for l in feature["labels"] if l != -100]
    assert len(labelled) > 1 and labelled[0] == "B-PER" and set(labelled[1:]) == {"I-PER"}
    assert sum(w >= 0 for w in feature["words"]) == 1


def test_plan_windows_owns_every_word_exactly_once():
    sizes = [1, 3, 2, 1, 1, 4, 2, 2, 1, 1, 3, 1] * 5
    windows = plan_windows(sizes, budget=12, stride=2)
    owned = [w for _, start, end, _ in windows for w in range(start, end)]
    assert owned == list(range(len(sizes)))
    for left, start, end, right in windows:
        assert left <= start < end <= right and sum(sizes[left:right]) <= 12
    assert any(left < start for left, start, _, _ in windows)  # later windows carry left context
    assert plan_windows([1, 1], budget=12, stride=2) == [(0, 0, 2, 2)]


def test_long_sentences_become_windows_and_lose_nothing(tokenizer):
    task = make_task(max_length=16, stride=3)
    words = ("the european commission said on thursday it disagreed with german advice " * 6).split()
    tags = ["O"] * len(words)
    tags[1], tags[2] = "B-ORG", "I-ORG"
    ex = {"tokens": words, "tags": tags, "where": "t:1"}
    task.fit_labels([ex], {})
    features = task.featurize([ex], tokenizer)
    assert len(features) > 3 and all(f["length"] <= 16 for f in features)
    owned = sorted(w for f in features for w in f["words"] if w >= 0)
    assert owned == list(range(len(words)))  # every word predicted once, none silently truncated
    # Perfect predictions through the windows give perfect metrics on the whole sentence.
    predictions = [[(w, f["labels"][i], 1.0) for i, w in enumerate(f["words"]) if w >= 0] for f in features]
    metrics = task.compute_metrics(predictions, features, [ex])
    assert metrics["f1"] == 1.0 and metrics["entities"] == 1


# ---- metrics -------------------------------------------------------------------------------------------
def test_seqeval_figures_match_hand_counts():
    task = make_task()
    gold = [example("a b c d e f", "B-PER I-PER O B-LOC O B-ORG"), example("g h", "B-LOC O")]
    task.fit_labels(gold, {})
    lid = {l: i for i, l in enumerate(task.labels)}
    # predicted: PER right; LOC in sentence 1 missed; ORG typed as LOC; sentence 2: LOC right and a spurious PER
    predicted = [["B-PER", "I-PER", "O", "O", "O", "B-LOC"], ["B-LOC", "B-PER"]]
    features = [{"example": i} for i in range(2)]
    predictions = [[(w, lid[t], 1.0) for w, t in enumerate(tags)] for tags in predicted]
    metrics = task.compute_metrics(predictions, features, gold)
    # gold entities 4, predicted 4, correct 2 → P = R = F1 = 0.5
    assert metrics["precision"] == pytest.approx(0.5) and metrics["recall"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx(0.5) and metrics["entities"] == 4
    assert metrics["per_type"]["PER"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert metrics["per_type"]["LOC"]["recall"] == pytest.approx(0.5)
    assert metrics["per_type"]["ORG"]["f1"] == 0.0
    assert metrics["accuracy"] == pytest.approx(5 / 8)


def test_predict_inputs_text_and_tokens():
    task = make_task()
    examples = task.read_inputs(["Angela Merkel met Macron.", '{"tokens": ["Rome", "!"]}', '{"text": "Hi Bob"}', ""])
    assert examples[0]["tokens"] == ["Angela", "Merkel", "met", "Macron", "."]
    assert examples[0]["offsets"][3] == (18, 24)
    assert examples[1] == {"tokens": ["Rome", "!"]}
    assert examples[2]["tokens"] == ["Hi", "Bob"] and examples[3]["tokens"] == []
