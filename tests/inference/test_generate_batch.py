"""Inference.generate_batch on the tiny random Llama: replies decoded together answer as each request alone
(greedy: the same text; seeded sampling: the same sample), each row stops at its own max_tokens, stop string or
end, and a row that fails fails alone."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ftune.replies import GenerationRequest

QUESTIONS = ["hi", "what colour is the sky ?", "tell me a much longer story about the cat , the dog and the sky",
             "why ?"]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from ftune.inference import Inference
    from ftune.registry import defaults

    task = OmegaConf.merge(defaults("task", "sft"), {"max_length": 64, "generation": {"max_new_tokens": 10}})
    return Inference.load(OmegaConf.create({"model_dir": str(tiny_llama_dir), "task": task, "device": "cpu",
                                            "precision": "fp32"}))


def _prompts(llama) -> list[list[int]]:
    prompts = [llama.prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths: the batch is padded
    return prompts


def _settings(llama, **changes):
    return OmegaConf.merge(llama.task.cfg.generation, changes)


def test_batched_greedy_replies_equal_model_generate_alone(llama):
    prompts = _prompts(llama)
    alone = [llama.generate(prompt) for prompt in prompts]  # model.generate, one prompt at a time
    batched = llama.generate_batch([GenerationRequest(p, _settings(llama)) for p in prompts])
    for one, together in zip(alone, batched, strict=True):
        assert together["text"] == one["text"] and together["tokens"] == one["tokens"]
        assert (together["finish_reason"], together["completion_tokens"]) == (one["finish_reason"],
                                                                              one["completion_tokens"])


def test_a_shared_prompt_prefix_is_computed_once_with_the_same_replies(llama, monkeypatch):
    from ftune import batch_cache

    system = {"role": "system", "content": "be brief and kind"}
    prompts = [llama.prompt([system, {"role": "user", "content": q}]) for q in ["hi", "why ?", "what colour is it ?"]]
    assert batch_cache._shared(prompts) >= batch_cache.SHARED_MIN and max(map(len, prompts)) < 64  # not cut
    widths, logits = [], []
    forward = batch_cache._forward
    monkeypatch.setattr(batch_cache, "_forward", lambda model, ids, *rest: widths.append(ids.shape) or logits.append(
        forward(model, ids, *rest)) or logits[-1])
    batched = llama.generate_batch([GenerationRequest(p, _settings(llama)) for p in prompts])
    shared, longest = batch_cache._shared(prompts), max(len(p) for p in prompts)
    assert widths[:2] == [(1, shared), (len(prompts), longest - shared)]  # the prefix once, then each row's rest
    with torch.inference_mode():  # each row's first logits as its prompt's alone, to float rounding
        alone = torch.cat([llama.engine.model(input_ids=torch.tensor([p])).logits[:, -1] for p in prompts])
    assert (logits[1] - alone).abs().max() < 1e-5
    assert [r["tokens"] for r in batched] == [llama.generate(p)["tokens"] for p in prompts]


def test_a_seeded_sample_is_the_same_alone_and_in_a_batch(llama):
    prompts = _prompts(llama)
    sampled = _settings(llama, do_sample=True, temperature=1.0, top_p=0.9)
    alone = llama.generate_batch([GenerationRequest(prompts[1], sampled, seed=7)])[0]
    batch = [GenerationRequest(p, sampled, seed=seed) for p, seed in zip(prompts, [1, 7, 2, 3], strict=True)]
    assert llama.generate_batch(batch)[1]["tokens"] == alone["tokens"]
    torch.manual_seed(7)  # the sample model.generate draws after torch.manual_seed(seed), as before batching
    assert llama.generate(prompts[1], sampled)["tokens"] == alone["tokens"]
    others = llama.generate_batch([GenerationRequest(prompts[1], sampled, seed=s) for s in (8, 9, 10)])
    assert any(other["tokens"] != alone["tokens"] for other in others)  # the seed is what makes them equal


def test_each_row_stops_at_its_own_max_tokens_stop_string_or_end(llama):
    prompts = _prompts(llama)
    full = llama.generate(prompts[2])["text"]
    stop = full[len(full) // 2:][:2]
    emitted: list[list[str]] = [[], [], []]
    requests = [GenerationRequest(prompts[0], _settings(llama, max_new_tokens=2), emit=emitted[0].append),
                GenerationRequest(prompts[2], _settings(llama), stops=[stop], emit=emitted[1].append),
                GenerationRequest(prompts[3], _settings(llama), emit=emitted[2].append)]
    short, stopped, long = llama.generate_batch(requests)
    assert short["completion_tokens"] == 2 and short["finish_reason"] == "length"
    assert stopped["text"] == full[:full.index(stop)] and stopped["finish_reason"] == "stop"
    assert long == {**llama.generate(prompts[3]), "created": long["created"], "id": long["id"]}
    for pieces, result in zip(emitted, (short, stopped, long), strict=True):
        assert "".join(pieces) == result["text"]  # each stream gets its own reply, piece by piece


def test_a_cancelled_row_leaves_at_its_next_token(llama):
    prompts = _prompts(llama)
    gone = GenerationRequest(prompts[1], _settings(llama))
    gone.emit = lambda piece: setattr(gone, "cancelled", True)  # its client goes away after the first piece
    stays, left = llama.generate_batch([GenerationRequest(prompts[0], _settings(llama)), gone])
    assert left["finish_reason"] == "cancelled" and len(left["tokens"]) < len(stays["tokens"]) == 10


def test_a_failing_row_fails_alone(llama):
    prompts = _prompts(llama)
    bad = GenerationRequest([0, 10 ** 6], _settings(llama))  # a token id past the vocabulary: the forward raises
    results = llama.generate_batch([GenerationRequest(prompts[0], _settings(llama)), bad,
                                    GenerationRequest(prompts[1], _settings(llama))])
    assert isinstance(results[1], IndexError)
    assert [results[0]["text"], results[2]["text"]] == [llama.generate(p)["text"] for p in prompts[:2]]


def test_requests_join_a_running_batch_and_are_answered_when_done(llama):
    """Requests that arrive while a batch decodes join it between steps (their prompts prefilled apart, their
    cache left-padded into the batch's); each is answered as soon as it is done, as it would be alone."""
    from ftune.generate_batch import generate_batch

    prompts, model = _prompts(llama), llama.engine.model.eval()
    arriving = {2: [GenerationRequest(prompts[2], _settings(llama))],  # a longer prompt than the running rows'
                4: [GenerationRequest(prompts[3], _settings(llama, max_new_tokens=2)),
                    GenerationRequest([0, 10 ** 6], _settings(llama))]}  # its prefill fails: it alone fails
    steps, answered = [], []

    def more(active: int) -> list:
        steps.append(active)
        return arriving.get(len(steps), [])

    first = [GenerationRequest(prompts[0], _settings(llama)), GenerationRequest(prompts[1], _settings(llama))]
    results = generate_batch(model, llama.tokenizer, first, more, lambda request, result: answered.append(request))
    assert steps[:5] == [2, 2, 3, 3, 3]  # the rows active when asked: one joined at step 2, one at step 4 for 2 tokens
    for prompt, result in zip([*prompts[:2], prompts[2], prompts[3]], results, strict=False):
        settings = _settings(llama, max_new_tokens=len(result["tokens"])) if result["finish_reason"] == "length" \
            else _settings(llama)
        assert result["tokens"] == llama.generate(prompt, settings)["tokens"]
    assert isinstance(results[4], IndexError) and answered[:2] == arriving[4][::-1]  # each answered when done


def test_a_retried_stream_does_not_send_its_text_twice():
    from ftune.replies import Emitter

    got: list[str] = []
    first = Emitter(got.append)
    for piece in ["the ", "cat"]:
        first.send(piece)
    again = Emitter(got.append, already=first.sent)  # the row from its start, alone
    for piece in ["th", "e c", "at sat", "."]:
        again.send(piece)
    assert "".join(got) == "the cat sat."
    with pytest.raises(RuntimeError, match="differs"):
        Emitter(got.append, already="the cat").send("a dog")
