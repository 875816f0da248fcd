"""Explaining QA answer spans, generated tokens (seq2seq on the tiny T5, sft and dpo on the tiny Llama) and
relations: integrated gradients' completeness within the reported delta, one explanation per generated token,
word sums over the question and context (issue 31)."""

import math
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from ftune.errors import FtuneError
from ftune.explain import faithfulness
from ftune.explain.attribution import Explainer, Settings
from ftune.explain.rows import explain_examples
from ftune.inference import Inference
from ftune.registry import build_task
from ftune.registry import defaults as group_defaults


def _inference(name: str, model, tokenizer, labels=(), **task_overrides) -> Inference:
    cfg = group_defaults("task", name)
    for key, value in task_overrides.items():
        cfg[key] = value
    task = build_task(cfg)
    task.labels = list(labels)
    task.bind_tokenizer(tokenizer)
    return Inference(task=task, tokenizer=tokenizer, model=model.eval(), folder=Path("."))


def _completeness(explainer: Explainer, feature: dict, target: dict, forward, index=None):
    """f(input) - f(baseline) of the explained function."""
    ids = torch.tensor([list(feature["input_ids"])])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        embeds = explainer.embeddings(ids)
        values = forward(torch.cat([embeds, explainer._baseline(ids, embeds)]), mask.expand(2, -1))
    values = values if index is None else values[:, index]
    return float(values[0] - values[1])


@pytest.fixture(scope="module")
def qa(tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model_dir)
    return _inference("qa", model, tokenizer)


def test_qa_explains_the_answer_span_and_integrated_gradients_are_complete(qa, tokenizer):
    explainer = Explainer(qa, Settings(method="integrated_gradients", steps=128, baseline="pad"))
    line = '{"question": "who said it ?", "context": "the army said on monday in the city of paris"}'
    row = explain_examples(explainer, qa.task.read_inputs([line]))[0]
    (item,) = row["explanations"]
    assert item["label"] == "answer" and item["span"] and item["span"] in "the army said on monday in the city of paris"
    words = [w["word"] for w in item["words"]]
    assert words == "who said it ? the army said on monday in the city of paris".split()
    assert sum(w["score"] for w in item["words"]) == pytest.approx(
        sum(t["score"] for t in item["tokens"] if t["token"] not in ("[CLS]", "[SEP]")), abs=1e-4)
    feature = qa.task.featurize(qa.task.read_inputs([line]), tokenizer)[0]
    (target,), _ = explainer.explain_feature(feature)
    assert target["probability"] == pytest.approx(item["probability"], rel=1e-3)
    inputs = explainer.inputs([feature])
    rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    change = _completeness(explainer, feature, target, explainer._forward(target, rest))
    assert abs(change) > 1e-4
    assert sum(target["scores"]) == pytest.approx(change, abs=abs(target["delta"]) + 1e-6)
    assert abs(target["delta"]) < 0.1 * abs(change) + 1e-5  # 128 points: the path integral converged
    with pytest.raises(FtuneError, match="explain.target does not apply"):
        Explainer(qa, Settings(target="PER")).explain_feature(feature)
    result = faithfulness.measure(Explainer(qa, Settings(method="attention")), qa.task.read_inputs([line]))
    assert result["targets"] == 1  # the answer's tokens stay, its context is ranked


def test_seq2seq_explains_each_generated_token_over_the_source(tiny_t5_dir):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    inference = _inference("seq2seq", AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), tokenizer)
    inference.task.cfg.generation.max_new_tokens = 4
    explainer = Explainer(inference, Settings(method="integrated_gradients", steps=32, baseline="pad", internal_batch_size=32))
    examples = inference.task.read_inputs(["the cat sat on the mat"])
    row = explain_examples(explainer, examples)[0]
    generated = row["prediction"]["generated"]
    assert row["explanations"], "the tiny T5 generates some tokens"
    assert [e["label"] for e in row["explanations"]] == tokenizer.convert_ids_to_tokens(
        tokenizer(text_target=generated)["input_ids"])
    source = tokenizer.convert_ids_to_tokens(tokenizer("the cat sat on the mat")["input_ids"])
    for item in row["explanations"]:
        assert [t["token"] for t in item["tokens"]] == source
        assert math.exp(item["log_probability"]) == pytest.approx(item["probability"], rel=1e-3)
    feature = inference.task.featurize(examples, tokenizer)[0]
    targets, _ = explainer.explain_feature(feature)
    from ftune.explain.generation import _forward

    reply = torch.tensor([[t["index"] for t in targets]])
    forward = _forward(explainer.model, len(feature["input_ids"]), reply, True, explainer.embeddings)
    for index, target in enumerate(targets):
        change = _completeness(explainer, feature, target, forward, index)
        assert sum(target["scores"]) == pytest.approx(change, abs=abs(target["delta"]) + 1e-5)
    attention = explain_examples(Explainer(inference, Settings(method="attention")), examples)[0]
    assert len(attention["explanations"]) == len(row["explanations"])


@pytest.mark.parametrize("name", ["sft", "dpo"])
def test_a_chat_model_explains_its_reply_over_the_prompt(tiny_llama_dir, name):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    inference = _inference(name, AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tokenizer)
    inference.task.cfg.generation.max_new_tokens = 3
    explainer = Explainer(inference, Settings(method="integrated_gradients", steps=32, internal_batch_size=32))
    examples = inference.task.read_inputs(["what colour is the sky ?"])
    feature = inference.task.featurize(examples, tokenizer)[0]
    targets, prediction = explainer.explain_feature(feature)
    assert targets and prediction["generated"] is not None
    with pytest.raises(FtuneError, match="explains the tokens it generates; explain.target does not apply"):
        Explainer(inference, Settings(target="yes")).explain_feature(feature)
    from ftune.explain.generation import _forward

    reply = torch.tensor([[t["index"] for t in targets]])
    forward = _forward(explainer.model, len(feature["input_ids"]), reply, False, explainer.embeddings)
    for index, target in enumerate(targets):
        assert len(target["scores"]) == len(feature["input_ids"])  # over the prompt tokens only
        change = _completeness(explainer, feature, target, forward, index)
        assert sum(target["scores"]) == pytest.approx(change, abs=abs(target["delta"]) + 1e-5)


def test_relation_explains_the_predicted_relation(tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    labels = ["founded", "no_relation"]
    inference = _inference("relation", AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2), tokenizer, labels)
    inference.model.resize_token_embeddings(len(tokenizer))
    explainer = Explainer(inference, Settings(method="gradient_x_input"))
    line = '{"text": "the army said on monday", "head": [0, 8], "tail": [17, 23]}'
    row = explain_examples(explainer, inference.task.read_inputs([line]))[0]
    assert row["prediction"]["label"] in labels
    (item,) = row["explanations"]
    tokens = [t["token"] for t in item["tokens"]]
    assert tokens[:3] == ["[CLS]", "[E1]", "the"] and "[E2]" in tokens
    assert "army" in [w["word"] for w in item["words"]]
    assert explain_examples(explainer, inference.task.read_inputs(['{"text": "no spans"}'])) == [
        {"error": "an input the task cannot read"}]
