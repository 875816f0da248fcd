"""Inference.prompt / generate / stream on tiny random models (a Llama chat model and a T5): the one way
chat, serve and the GGUF check generate."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from ftune.errors import FtuneError

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what colour is the sky ?"}]


def _load(folder: Path, task: str, **task_keys):
    from ftune.inference import Inference
    from ftune.registry import defaults

    task_cfg = OmegaConf.merge(defaults("task", task), task_keys)
    return Inference.load(OmegaConf.create({"model_dir": str(folder), "task": task_cfg, "device": "cpu",
                                            "precision": "fp32"}))


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return _load(tiny_llama_dir, "sft", max_length=64, generation={"max_new_tokens": 5})


@pytest.fixture(scope="module")
def t5(tiny_t5_dir):
    return _load(tiny_t5_dir, "seq2seq", max_source_length=16, prefix="answer: ", generation={"max_new_tokens": 4})


def test_generate_is_transformers_greedy_generation(llama):
    import torch

    prompt = llama.prompt(CHAT)
    assert prompt == llama.task.prompt_ids(CHAT)  # the chat template, ending with the assistant header
    result = llama.generate(prompt)
    with torch.inference_mode():
        ids = torch.tensor([prompt])
        expected = llama.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                        pad_token_id=llama.tokenizer.pad_token_id)[0, len(prompt):].tolist()
    assert result["tokens"] == expected
    assert result["text"] == llama.tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert result["prompt_tokens"] == len(prompt) and result["completion_tokens"] == len(expected)
    assert result["finish_reason"] == ("stop" if llama.tokenizer.eos_token_id in expected or len(expected) < 5
                                       else "length")


def test_stream_yields_the_generated_text_piece_by_piece(llama):
    prompt = llama.prompt(CHAT)
    whole = llama.generate(prompt)
    stream = llama.stream(prompt)
    pieces = list(stream)
    assert "".join(pieces) == whole["text"] == stream.result["text"]
    assert stream.result["tokens"] == whole["tokens"]
    heard: list[str] = []
    assert llama.generate(prompt, on_text=heard.append)["text"] == "".join(heard)


def test_settings_and_min_tokens_change_the_reply(llama):
    prompt = llama.prompt(CHAT)
    short = llama.generate(prompt, OmegaConf.merge(llama.task.cfg.generation, {"max_new_tokens": 2}))
    assert short["completion_tokens"] <= 2
    longer = llama.generate(prompt, min_tokens=3)
    assert longer["completion_tokens"] >= 3


def test_a_long_prompt_is_cut_once_or_refused(llama):
    long = [{"role": "user", "content": "the cat sat on the mat " * 40}]
    cut = llama.prompt(long)
    assert len(cut) == llama.max_prompt_tokens == 64 and cut == llama.task.prompt_ids(long)  # most recent kept
    from ftune.replies import PromptTooLong

    with pytest.raises(PromptTooLong) as refused:
        llama.prompt(long, cut=False)
    assert refused.value.tokens > 64 and refused.value.limit == 64
    text = llama.prompt("hello there", cut=False)  # a completion: the text itself, no template
    assert text == llama.tokenizer("hello there", add_special_tokens=False)["input_ids"]


def test_a_text_to_text_run_answers_the_last_user_message(t5):
    conversation = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                    {"role": "user", "content": "sky colour"}]
    prompt = t5.prompt(conversation)
    assert prompt == t5.tokenizer("answer: sky colour")["input_ids"] == t5.prompt("sky colour")
    result = t5.generate(prompt)
    assert isinstance(result["text"], str) and 1 <= result["completion_tokens"] <= 5  # decoder start + 4
    assert "".join(t5.stream(prompt)) == result["text"]
    long = t5.prompt("the cat sat on the mat " * 20)
    assert len(long) == t5.max_prompt_tokens == 16 and long[-1] == t5.tokenizer.eos_token_id  # the start kept


def test_a_task_that_does_not_generate_is_refused():
    from ftune.inference import Inference

    task = SimpleNamespace(name="ner", generates=False, chat_input=None, cfg=OmegaConf.create({"max_length": 8}))
    inference = Inference(task=task, tokenizer=None, model=None, folder=Path("."))
    assert not inference.generative
    with pytest.raises(FtuneError, match="does not generate"):
        inference.generate([1, 2])
    with pytest.raises(FtuneError, match="takes no prompts"):
        inference.prompt("hello")
