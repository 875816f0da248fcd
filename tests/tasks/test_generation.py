"""Generative tasks: metric wrappers against known values, the sft loss mask, packing boundaries."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ftune.errors import FtuneError
from ftune.registry import defaults
from ftune.tasks import generation as G
from ftune.tasks.sft import DEFAULT_TEMPLATE, SftTask

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what colour is the sky ?"},
        {"role": "assistant", "content": "blue"}, {"role": "user", "content": "and the cat ?"},
        {"role": "assistant", "content": "the cat sat on the mat"}]


def sft_task(**settings) -> SftTask:
    return SftTask(OmegaConf.merge(defaults("task", "sft"), settings))


def test_rouge_known_values():
    # rouge-score's README example: ROUGE-1 P=0.75 R=1 → F=0.857; ROUGE-L the same (one LCS of 3 tokens)
    scores = G.rouge(["The quick brown dog jumps on the log."], ["The quick brown fox jumps over the lazy dog"])
    assert scores["rouge1"] == pytest.approx(100 * 2 * (6 / 8) * (6 / 9) / (6 / 8 + 6 / 9))
    assert G.rouge(["a b c"], ["a b c"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


def test_bleu_chrf_known_values():
    perfect = G.bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert G.bleu_chrf(["xyz"], ["the cat sat on the mat"])["bleu"] == 0.0
    # sacrebleu's own figure for this pair (4-gram precisions 5/6, 3/5, 2/4, 1/3 with the 13a tokeniser)
    assert G.bleu_chrf(["the cat sat on a mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(53.7284, abs=1e-3)


def test_exact_match_and_token_f1():
    scores = G.exact_match_f1(["The Denver Broncos", "Paris, France"], [["Denver Broncos"], ["Lyon", "Paris"]])
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["token_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


@pytest.mark.parametrize("template", ["model", "default"])
def test_loss_mask_covers_exactly_the_assistant_turns(template, tiny_llama_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    task = sft_task(chat_template=DEFAULT_TEMPLATE if template == "default" else None)
    [feature] = task.featurize([{"messages": CHAT}], tokenizer)
    ids, labels = feature["input_ids"], feature["labels"]
    assert [i for i, l in zip(ids, labels, strict=True) if l != -100] == [l for l in labels if l != -100]
    end = "<|im_end|>\n"  # both templates close an assistant turn with it (the default one: EOS + newline)
    masked = tokenizer.decode([l for l in labels if l != -100])
    assert masked == f"blue{end}the cat sat on the mat{end}"
    # every other token is outside the loss: system and user turns, role headers
    unmasked = tokenizer.decode([i for i, l in zip(ids, labels, strict=True) if l == -100])
    assert "what colour is the sky ?" in unmasked and "blue" not in unmasked and "be brief" in unmasked


def test_template_that_is_not_incremental_is_refused(tiny_llama_dir):
    from transformers import AutoTokenizer

    # renders the last message first: prefixes of the conversation are not prefixes of its rendering
    reverse = "{% for m in messages|reverse %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    task = sft_task(chat_template=reverse)
    with pytest.raises(FtuneError, match="turn by turn"):
        task.featurize([{"messages": CHAT}], AutoTokenizer.from_pretrained(tiny_llama_dir))


def test_packing_keeps_conversations_apart(tiny_llama_dir):
    """Per-conversation logits and losses are the same packed (one row, restarting positions) and unpacked."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    task = sft_task(packing=True, max_length=512)
    model = task.build_model(str(tiny_llama_dir)).eval()  # also runs the packing probe
    examples = [{"messages": CHAT}, {"messages": CHAT[1:3]}, {"messages": [CHAT[3], CHAT[4]]}]
    features = task.featurize(examples, tokenizer)
    packed = task.collate(features)
    assert packed["inputs"]["input_ids"].shape[0] == 1 and "attention_mask" not in packed["inputs"]
    with torch.no_grad():
        packed_logits = model(**packed["inputs"]).logits[0]
        for feature, (_, start, end) in zip(features, packed["segments"], strict=True):
            alone = model(input_ids=torch.tensor([feature["input_ids"]])).logits[0]
            torch.testing.assert_close(packed_logits[start:end], alone, atol=1e-4, rtol=1e-4)
        task.cfg.packing = False
        padded = task.collate(features)
        sums = [task.loss(model(**b["inputs"]), b) for b in (packed, padded)]
    # the packed row drops no target (each conversation's first token is a prompt token anyway)
    torch.testing.assert_close(sums[0][0], sums[1][0], atol=1e-3, rtol=1e-4)
    assert int(sums[0][1]) == int(sums[1][1])


def test_packing_refused_where_attention_ignores_position_ids(tiny_llama_dir, monkeypatch):
    task = sft_task(packing=True)
    model = task.build_model(str(tiny_llama_dir))
    # a model whose mask ignores the restarting position ids: packed conversations would see each other
    real = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, position_ids=None, **kw: real(self, **kw))
    with pytest.raises(FtuneError, match="task.packing"):
        G.check_packing(model)


def test_data_errors_name_the_line(tmp_path):
    from ftune.registry import defaults
    from ftune.tasks.seq2seq import Seq2seqTask

    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": 3}\n{"messages": [{"role": "bot", "content": "x"}]}\n{"prompt": "a", "response": "b"}\n')
    with pytest.raises(FtuneError, match=r"2 problem\(s\).*bad.jsonl:1: .*bad.jsonl:2: message 0 needs a role"):
        sft_task().load_file(str(path))
    task = Seq2seqTask(OmegaConf.merge(defaults("task", "seq2seq"), {"data": {"source_column": "a.b"}}))
    path.write_text('{"a": {"b": "nested source"}, "target": "t"}\n{"a": "flat", "target": "t"}\n')
    with pytest.raises(FtuneError, match="bad.jsonl:2: `a.b` is missing"):
        task.load_file(str(path))


def test_predict_inputs_of_sft():
    examples = sft_task(data={"system_prompt": "be brief"}).read_inputs(
        ["plain text", '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
         '{"messages": 3}'])
    assert examples[0]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "plain text"}]
    assert examples[1]["messages"] == [{"role": "user", "content": "q"}]  # the reply is generated again
    assert "error" in examples[2]


def test_gguf_model_names_fail_with_one_line(tmp_path):
    from ftune.models import locate

    with pytest.raises(FtuneError, match="package `no_such_package` is not installed"):
        locate("gguf:no_such_package/model.gguf")
    with pytest.raises(FtuneError, match="GGUF file not found"):
        locate(f"gguf:{tmp_path}/missing.gguf")
