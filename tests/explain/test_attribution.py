"""Attributions on the tiny BERT: integrated gradients' completeness, zero attribution for an ignored token,
word sums, NER entity targets, faithfulness on a model keyed on one token, bad settings (issue 31)."""

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from ftune.errors import FtuneError
from ftune.explain import faithfulness
from ftune.explain.attribution import Explainer, Settings, words_of
from ftune.explain.rows import explain_examples
from ftune.inference import Inference
from ftune.registry import build_task
from ftune.registry import defaults as group_defaults


def _inference(name: str, labels: list[str], model, tokenizer) -> Inference:
    task = build_task(group_defaults("task", name))
    task.labels = labels
    task.bind_tokenizer(tokenizer)
    return Inference(task=task, tokenizer=tokenizer, model=model, folder=Path("."))


FILLER = ["the", "said", "on", "monday", "in", "of", "to", "a"]


@pytest.fixture(scope="module")
def keyed(tiny_model_dir, tokenizer):
    """The tiny BERT trained until it decides on one word ("army" present or not), and its examples."""
    return _keyed(tiny_model_dir, tokenizer, [6])


def _keyed(tiny_model_dir, tokenizer, lengths: list[int]):
    import random

    torch.manual_seed(0)
    inference = _inference("classification", ["absent", "present"],
                           AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2), tokenizer)
    rng = random.Random(0)
    texts = [rng.sample(FILLER, lengths[i // 2 % len(lengths)]) for i in range(64)]  # only "army" tells the classes
    at = [2 if len(lengths) == 1 else rng.randrange(len(t)) for t in texts]  # where "army" replaces a word
    examples = [{"text": " ".join(t[:a] + ["army"] + t[a + 1:]) if i % 2 else " ".join(t),
                 "label": ["absent", "present"][i % 2]} for i, (t, a) in enumerate(zip(texts, at, strict=True))]
    examples += [{"text": " ".join(["[MASK]"] * 6), "label": "absent"}] * 8  # the mask baseline has no "army"
    model, task = inference.model, inference.task
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = task.collate(task.featurize(examples, tokenizer))
    model.train()
    for _ in range(60):
        model(**batch["inputs"], labels=batch["targets"]["labels"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return inference, examples


@pytest.fixture
def classifier(keyed, tokenizer):
    """A copy of the keyed classifier (tests may change its weights)."""
    inference, _ = keyed
    return _inference("classification", ["absent", "present"], copy.deepcopy(inference.model), tokenizer)


def _split_word(tokenizer) -> str:
    """A word the tiny tokenizer cuts into two sub-tokens (a vocabulary word + ##s)."""
    vocab = tokenizer.get_vocab()
    return next(w + "s" for w in sorted(vocab) if w.isalpha() and len(w) > 3 and w + "s" not in vocab)


def _completeness(explainer: Explainer, feature: dict, target: dict) -> float:
    """f(input) - f(baseline) of one target, to compare with the sum of its integrated gradients."""
    inputs = explainer.inputs([feature])
    ids = inputs.pop("input_ids")
    with torch.no_grad():
        baseline = explainer._baseline(ids, explainer.embeddings(ids))
        rest = {k: v for k, v in inputs.items() if k != "attention_mask"}
        return target["probability"] - float(explainer._forward(target, rest)(baseline, inputs["attention_mask"])[0])


def test_integrated_gradients_sum_to_the_change_from_the_baseline(classifier, tokenizer):
    explainer = Explainer(classifier, Settings(method="integrated_gradients", steps=64, baseline="mask"))
    feature = classifier.task.featurize(classifier.task.read_inputs(["the said army on monday in"]), tokenizer)[0]
    (target,), _ = explainer.explain_feature(feature)
    assert target["label"] == "present"
    change = _completeness(explainer, feature, target)
    assert abs(change) > 0.1  # the check is not vacuous: the baseline has no "army"
    assert sum(target["scores"]) == pytest.approx(change, abs=abs(target["delta"]) + 1e-6)
    # (the keyed model's decision is so sharp that 64 path points leave a large delta: it is reported, not hidden)


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input"])
def test_a_token_whose_embedding_row_is_zero_gets_zero_attribution(classifier, tokenizer, method):
    ignored = tokenizer.convert_tokens_to_ids("said")
    with torch.no_grad():
        classifier.model.get_input_embeddings().weight[ignored] = 0.0
    classifier.model.get_input_embeddings().weight.requires_grad_(False)
    explainer = Explainer(classifier, Settings(method=method, baseline="zero"))
    row = explain_examples(explainer, classifier.task.read_inputs(["the army said on monday"]))[0]
    scores = {t["token"]: t["score"] for t in row["explanations"][0]["tokens"]}
    assert scores["said"] == 0.0
    assert any(abs(s) > 0 for token, s in scores.items() if token not in ("said", "[CLS]", "[SEP]"))


def test_word_attributions_sum_their_sub_tokens(classifier, tokenizer):
    word = _split_word(tokenizer)
    explainer = Explainer(classifier, Settings(method="gradient_x_input"))
    item = explain_examples(explainer, classifier.task.read_inputs([f"the {word} said"]))[0]["explanations"][0]
    pieces = [t["score"] for t in item["tokens"][2:4]]
    assert [t["token"] for t in item["tokens"][2:4]] == [word[:-1], "##s"]
    assert [w["word"] for w in item["words"]] == ["the", word, "said"]
    assert item["words"][1]["score"] == pytest.approx(sum(pieces), rel=1e-3, abs=1e-8)
    assert words_of([1.0, 2.0, 3.0, 4.0], ["a", "b"], [None, 0, 0, 1]) == [{"word": "a", "score": 5.0},
                                                                           {"word": "b", "score": 4.0}]


def test_ner_explains_each_predicted_entity_over_words(tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=len(labels))
    inference = _inference("ner", labels, model, tokenizer)
    explainer = Explainer(inference, Settings(method="attention"))
    word = _split_word(tokenizer)
    row = explain_examples(explainer, inference.task.read_inputs([f"the {word} said on monday"]))[0]
    assert row["explanations"], "the random tiny tagger predicts some entity"
    for item in row["explanations"]:
        assert item["label"] in ("LOC", "PER") and item["span"]
        assert [w["word"] for w in item["words"]] == ["the", word, "said", "on", "monday"]
    with pytest.raises(FtuneError, match="target `PERS` is not an entity type.*did you mean `PER`"):
        Explainer(inference, Settings(target="PERS")).explain_feature(
            inference.task.featurize(inference.task.read_inputs(["the army"]), tokenizer)[0])


def test_bad_settings_are_one_line_errors(classifier, tokenizer):
    with pytest.raises(FtuneError, match="explain.method: unknown method `integrated_gradient`.*did you mean"):
        Explainer(classifier, Settings(method="integrated_gradient"))
    with pytest.raises(FtuneError, match="target `maybe` is not a label"):
        Explainer(classifier, Settings(target="maybe")).explain_feature(
            classifier.task.featurize(classifier.task.read_inputs(["the army"]), tokenizer)[0])
    mlm = _inference("mlm", [], classifier.model, tokenizer)
    with pytest.raises(FtuneError, match="task=mlm cannot be explained"):
        Explainer(mlm, Settings())


def _keyed_head(keyed, rows: list[int], bias: list[float]):
    """A copy of the keyed classifier (it decides on "army") with the output rows `rows` of its head, shifted."""
    model = copy.deepcopy(keyed[0].model)
    head = torch.nn.Linear(model.classifier.in_features, len(rows))
    with torch.no_grad():
        head.weight.copy_(model.classifier.weight[rows])
        head.bias.copy_(model.classifier.bias[rows] + torch.tensor(bias))
    model.classifier, model.num_labels = head, len(rows)
    return model.eval()


def test_multilabel_explains_each_predicted_label_by_its_own_sigmoid(keyed, tokenizer):
    from ftune.explain.page import rows_table

    text = "the said army on monday in"
    model = _keyed_head(keyed, [1, 0, 1], [0.0, 0.0, 0.0])  # labels a and c: "army" present; b: absent
    inference = _inference("multilabel", ["a", "b", "c"], model, tokenizer)
    feature = inference.task.featurize(inference.task.read_inputs([text]), tokenizer)[0]
    with torch.no_grad():
        logits = model(**{k: v for k, v in inference.task.collate([feature])["inputs"].items()}).logits[0]
        model.classifier.bias[2] += 1.0 - logits[2]  # c just over the threshold (p = 0.73), a far over it
    explainer = Explainer(inference, Settings(method="integrated_gradients", steps=64, baseline="mask"))
    with torch.no_grad():
        sigmoid = model(**explainer.inputs([feature])).logits[0].sigmoid().tolist()
    assert sigmoid[0] > 0.5 > sigmoid[1] and sigmoid[2] == pytest.approx(0.731, abs=1e-3)
    targets, prediction = explainer.explain_feature(feature)
    assert [t["label"] for t in targets] == ["a", "c"]
    assert [t["probability"] for t in targets] == pytest.approx([sigmoid[0], sigmoid[2]], abs=1e-6)  # not a softmax
    assert prediction == {"labels": pytest.approx({"a": sigmoid[0], "c": sigmoid[2]}, abs=1e-6)}
    for target in targets:
        change = _completeness(explainer, feature, target)
        assert abs(change) > 0.05  # the mask baseline has no "army": the check is not vacuous
        assert sum(target["scores"]) == pytest.approx(change, abs=abs(target["delta"]) + 1e-6)
    (asked,), again = Explainer(inference, Settings(method="gradient_x_input", target="b")).explain_feature(feature)
    assert asked["label"] == "b" and asked["probability"] == pytest.approx(sigmoid[1], abs=1e-6) and again == prediction
    row = explain_examples(explainer, inference.task.read_inputs([text]))[0]
    assert set(row["prediction"]["labels"]) == {"a", "c"} and [e["label"] for e in row["explanations"]] == ["a", "c"]
    assert rows_table([row]).count("class=l>") == 4  # two labels in the head, one per explanation


def test_regression_explains_the_predicted_number(keyed, tokenizer):
    model = _keyed_head(keyed, [1], [0.0])  # the number: the keyed classifier's "present" logit
    inference = _inference("regression", ["score"], model, tokenizer)
    explainer = Explainer(inference, Settings(method="integrated_gradients", steps=64, baseline="mask"))
    feature = inference.task.featurize(inference.task.read_inputs(["the said army on monday in"]), tokenizer)[0]
    with torch.no_grad():
        value = float(model(**explainer.inputs([feature])).logits[0, 0])
    (target,), prediction = explainer.explain_feature(feature)
    assert target["probability"] == pytest.approx(value, abs=1e-5) and prediction == {"value": pytest.approx(value)}
    change = _completeness(explainer, feature, target)
    assert abs(change) > 0.5
    assert sum(target["scores"]) == pytest.approx(change, abs=abs(target["delta"]) + 1e-5)
    measured = faithfulness.measure(explainer, inference.task.read_inputs(["the said army on monday in", "a b c"]))
    assert measured["targets"] == 2 and measured["method"]["comprehensiveness"]["aopc"] > 0  # "army" goes first
    with pytest.raises(FtuneError, match="one output: target `score` cannot be chosen"):
        Explainer(inference, Settings(target="score")).explain_feature(feature)


def test_faithfulness_of_a_perfect_ranking_beats_random_on_a_model_keyed_on_one_token(keyed, tokenizer):
    """Removing the one word the keyed classifier decides on flips its prediction, so a ranking that puts it
    first is more comprehensive (and more sufficient) than random rankings."""
    inference, examples = keyed
    explainer = Explainer(inference, Settings(method="gradient_x_input", target="present"))
    present = [ex for ex in examples if ex["label"] == "present"][:8]
    army = tokenizer.convert_tokens_to_ids("army")
    explainer.attribute = lambda feature, target: ([float(i == army) for i in feature["input_ids"]], None)
    for feature in inference.task.featurize(present, tokenizer):
        assert explainer.probabilities([feature])[0, 1] > 0.5
        without, _ = faithfulness.drop(feature, {feature["input_ids"].index(army)}, None)
        assert explainer.probabilities([without])[0, 1] < 0.5  # removing the one token flips the prediction
    result = faithfulness.measure(explainer, present, seed=0)
    assert result["targets"] == 8
    assert result["method"]["comprehensiveness"]["aopc"] > result["random"]["comprehensiveness"]["aopc"] + 0.1
    assert result["method"]["sufficiency"]["aopc"] < result["random"]["sufficiency"]["aopc"]


def test_input_reduction_keeps_the_prediction_and_is_deterministic(tiny_model_dir, tokenizer):
    """On a classifier keyed on "army" (trained on 3 to 8 words), reduction leaves few tokens ("army" among them
    for "present"), each reduced input still gets the original label, and a second run gives the same result."""
    from ftune.explain import reduction

    inference, examples = _keyed(tiny_model_dir, tokenizer, [3, 4, 5, 6, 7, 8])
    chosen = [ex for ex in examples if ex["label"] == "present" and len(ex["text"].split()) == 6][:3] + [
        ex for ex in examples if ex["label"] == "absent" and len(ex["text"].split()) == 6][:1]
    explainer = Explainer(inference, Settings(method="gradient_x_input"))
    result = reduction.reduce_inputs(explainer, chosen)
    assert result["examples"] == 4 and result == {**reduction.reduce_inputs(explainer, chosen),
                                                 "seconds": result["seconds"]}
    for item, example in zip(result["items"], chosen, strict=True):
        assert item["tokens"] == 6 and 1 <= item["kept"] < item["tokens"]
        original = explainer.probabilities(inference.task.featurize([example], tokenizer))[0].argmax()
        reduced = explainer.probabilities(inference.task.featurize([{"text": item["reduced"]}], tokenizer))[0]
        assert inference.task.labels[int(reduced.argmax())] == item["label"] == inference.task.labels[int(original)]
        if example["label"] == "present":  # "army" is not in the tiny vocabulary: the model keys on [UNK]
            assert item["reduced"] == tokenizer.unk_token  # the one token it decides on is all that is left
    assert result["median_kept"] == 1 and result["mean_share"] == pytest.approx(1 / 6)
    assert "input_reduction (gradient_x_input)" in reduction.summary(result)


def test_the_report_explains_the_most_confident_errors_first(classifier, keyed):
    from ftune.explain.examples import explained_examples
    from ftune.explain.page import rows_table

    _, examples = keyed
    split = [dict(ex) for ex in examples[:10]]
    for i in (3, 6):  # wrong gold labels: the model's confident predictions become errors
        split[i]["label"] = {"absent": "present", "present": "absent"}[split[i]["label"]]
    explainer = Explainer(classifier, Settings(method="gradient_x_input"))
    rows = explained_examples(explainer, split, 3)
    assert {r["text"] for r in rows[:2]} == {split[3]["text"], split[6]["text"]}
    assert rows[0]["prediction"]["score"] >= rows[1]["prediction"]["score"]  # the more confident error first
    assert all(r["gold"] != r["prediction"]["label"] for r in rows[:2]) and rows[2]["gold"] == rows[2]["prediction"]["label"]
    assert rows_table(rows).count("gold: ") == 3
