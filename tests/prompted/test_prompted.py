"""Prompted evaluation (ftune/prompted/, issue 29): log-likelihood scoring against a direct forward pass, length
normalisation, the few-shot draw, the prompt-length refusal and unparseable generations, on the tiny Llama."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from ftune.prompted import generation, prompts, scoring
from tests.conftest import cli_exit_code, run_cli, write_data


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), AutoTokenizer.from_pretrained(tiny_llama_dir)


def direct(model, ids: list[int], n: int) -> float:
    """Summed log-probability of the last n tokens of `ids`, from one unpadded forward pass without a cache."""
    with torch.inference_mode():
        logprobs = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return float(sum(logprobs[len(ids) - n - 1 + j, ids[len(ids) - n + j]] for j in range(n)))


@pytest.mark.parametrize("shared", [True, False])
def test_loglikelihood_equals_a_direct_forward_pass_per_label(llama, shared):
    model, tok = llama
    prefix = tuple(tok("Classify the text .\n\n", add_special_tokens=False)["input_ids"])
    requests = []
    for text in ("hello , how are you today ?", "Paris is the capital of France .", "das ist"):
        for word in (" positive", " negative", " so so good", " a"):  # one- and several-token verbalizers
            context, cont = scoring.encode_pair(tok, f"Text: {text}\nAnswer:", word)
            requests.append(scoring.Request(prefix, context, cont))
    assert {len(r.continuation) for r in requests} != {1}
    got = scoring.Scorer(model, 0, shared=shared).score(requests, batch_rows=5)
    for request, value in zip(requests, got, strict=True):
        want = direct(model, [*request.prefix, *request.context, *request.continuation], len(request.continuation))
        assert value == pytest.approx(want, abs=1e-4)


def test_single_token_continuations_share_one_row(llama):
    model, tok = llama
    context = tok("Text: hello\nAnswer:", add_special_tokens=False)["input_ids"]
    ids = [[40], [41], [42]]  # three labels, one token each
    calls = []
    scorer = scoring.Scorer(model, 0, shared=False)
    original = scorer._batch
    scorer._batch = lambda work, requests, out: (calls.append(len(work)), original(work, requests, out))
    got = scorer.score([scoring.Request((), context, i) for i in ids], batch_rows=8)
    assert calls == [1]  # one row for the three labels
    assert got == pytest.approx([direct(model, [*context, *i], 1) for i in ids], abs=1e-4)


def test_length_normalisation():
    scores, words, counts = [-6.0, -4.0], ["terrible", "ok"], [3, 1]
    assert scoring.normalised(scores, words, counts, "none") == [-6.0, -4.0]
    assert scoring.normalised(scores, words, counts, "tokens") == [-2.0, -4.0]  # the longer answer now wins
    assert scoring.normalised(scores, words, counts, "chars") == [-0.75, -2.0]  # lm-evaluation-harness acc_norm


def rows(n: int) -> list[dict]:
    return [{"text": f"text number {i}", "label": "pos" if i % 4 == 0 else "neg"} for i in range(n)]


def test_shots_are_deterministic_balanced_and_never_the_item():
    train = rows(40)  # 10 pos, 30 neg
    first, again = prompts.Shots(train, 6, seed=3, family="choice"), prompts.Shots(train, 6, seed=3, family="choice")
    assert first.chosen == again.chosen
    assert prompts.Shots(train, 6, seed=4, family="choice").chosen != first.chosen
    labels = [s["label"] for s in first.chosen]
    assert labels.count("pos") == labels.count("neg") == 3  # balanced although pos is rarer
    other = {"text": "not in train", "label": "pos"}
    assert first.for_item(other) is first.chosen  # the same shots for every item
    for shot in first.chosen:  # an item that is itself a shot: replaced by another of its label
        own = first.for_item(shot)
        assert shot not in own and len(own) == 6
        assert sorted(s["label"] for s in own) == sorted(labels)


def test_verbalizers_default_to_label_names_and_unknown_labels_are_refused():
    from ftune.errors import FtuneError

    assert prompts.verbalizers(None, ["0", "1"]) == {"0": "0", "1": "1"}
    assert prompts.verbalizers(OmegaConf.create({0: "bad"}), ["0", "1"]) == {"0": "bad", "1": "1"}
    with pytest.raises(FtuneError, match="not a label"):
        prompts.verbalizers({"2": "x"}, ["0", "1"])


def test_unparseable_generations_are_counted():
    tokens = ["John", "Smith", "lives", "in", "Paris", "."]
    found, ok = generation.parse_entities("PER: John Smith\nLOC: Paris", tokens, ["LOC", "PER"])
    assert ok and found == [("PER", 0, 1), ("LOC", 4, 4)]
    assert generation.parse_entities("none", tokens, ["PER"]) == ([], True)
    assert generation.parse_entities("I think the answer is yes", tokens, ["PER"])[1] is False
    assert generation.parse_entities("PER: Mary", tokens, ["PER"])[1] is False  # not a span of the sentence
    triples = generation.entity_predictions([("PER", 0, 1)], {"O": 0, "B-PER": 1, "I-PER": 2})
    assert triples == [(0, 1, 1.0), (1, 2, 1.0)]
    assert generation.answer_prediction("Paris", "He lives in Paris .", False)[2] is True
    assert generation.answer_prediction("somewhere else", "He lives in Paris .", False)[2] is False


@pytest.fixture
def sentiment(tmp_path):
    train = write_data(tmp_path / "train.jsonl", [{"text": f"good film {i}", "label": "pos"} for i in range(6)]
                       + [{"text": f"bad film {i}", "label": "neg"} for i in range(6)])
    dev = write_data(tmp_path / "dev.jsonl", [{"text": "good film again", "label": "pos"},
                                              {"text": "bad film again", "label": "neg"},
                                              {"text": "what a film", "label": "pos"}])
    return [f"task.data.train={train}", f"task.data.validation={dev}"]


@pytest.mark.slow  # the CLI, in-process, over a tiny model (~5 s)
def test_prompted_eval_writes_the_usual_metrics_file(tiny_llama_dir, sentiment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli("eval", f"model={tiny_llama_dir}", "task=classification", *sentiment, "prompt=few_shot",
            "prompt.shots=2", "prompt.verbalizers={pos: great, neg: awful}", "prompt.normalize=chars")
    metrics = json.loads((tmp_path / "eval_validation.json").read_text())
    assert metrics["examples"] == 3 and 0 <= metrics["accuracy"] <= 1 and set(metrics["per_class"]) == {"neg", "pos"}
    assert metrics["prompt"]["verbalizers"] == {"neg": "awful", "pos": "great"} and metrics["prompt"]["shots"] == 2


def test_prompt_over_the_limit_exits_2(tiny_llama_dir, sentiment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli_exit_code("eval", f"model={tiny_llama_dir}", "task=classification", *sentiment, "prompt=few_shot",
                         "prompt.shots=8", "prompt.max_length=40")
    assert code == 2
    assert "over the limit of 40" in capsys.readouterr().err
    assert not (tmp_path / "eval_validation.json").exists()


@pytest.mark.slow  # the CLI, in-process, generating with a tiny model (~5 s)
def test_ner_generations_are_parsed_and_unreadable_ones_counted(tiny_llama_dir, tiny_ner_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli("eval", f"model={tiny_llama_dir}", "task=ner", f"task.data.train={tiny_ner_data['train']}",
            f"task.data.validation={tiny_ner_data['validation']}", "prompt=zero_shot", "prompt.instruction=Entities:",
            "prompt.limit=4", "prompt.max_new_tokens=6")
    metrics = json.loads((tmp_path / "eval_validation.json").read_text())
    assert metrics["examples"] == 4 and {"f1", "precision", "recall"} <= set(metrics)
    # random weights write no `type: span` lines: every item is counted, none is dropped
    assert metrics["prompt"]["unparseable"] == 4
    assert metrics["entities"] > 0 and metrics["f1"] == 0.0
