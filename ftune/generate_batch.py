"""Several replies generated together (`Inference.generate_batch`, used by `ftune serve`'s OpenAI routes).

A static batch: the prompts are left-padded into one forward pass (attention mask and position ids, so padding
changes no row's positions), the KV cache (transformers' DynamicCache) is kept, then every active row gets one
token per step. A row leaves the batch (its cache rows dropped) at an end-of-sequence token, at its
`max_new_tokens`, or at one of its stop strings (checked on the decoded text, across token boundaries:
`StopWatch`). Requests that arrive while a batch runs wait for the next one.

Each row keeps its own settings: the logits processors `model.generate` would build for it alone (repetition
penalty, min_new_tokens, temperature, top_k, top_p: transformers' own helpers), and for sampling its own
`torch.Generator`, seeded by the request's `seed`, so a seeded request samples the same tokens alone and in a
batch (and as `model.generate` after `torch.manual_seed(seed)`). Greedy rows pick the same tokens alone and
in a batch up to float rounding: padding changes the shapes of the matrix products, so logits differ in the
last bits (about 1e-6 in fp32) and a near-tie could flip; tests/inference/test_generate_batch.py checks the
texts are equal. A failure while a batch runs is retried row by row, so only the request that caused it fails
(text a stream already got is not sent again). Seq2seq models and beam search are generated one request at a
time (`model.generate`), with the same stop strings and streaming.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerationRequest:
    """One reply to generate: the prompt's token ids, a task's `generation` settings (with the request's
    max_new_tokens / temperature / top_p applied), no end of sequence before `min_tokens`, `stops` ending the
    reply before their first occurrence, the sampling `seed`, and `emit` receiving the reply's text piece by
    piece (the pieces join to the returned text)."""

    prompt: list[int]
    settings: Any
    min_tokens: int = 0
    stops: list[str] = field(default_factory=list)
    seed: int | None = None
    emit: Callable[[str], None] | None = None


class StopWatch:
    """Feeds on the reply's text pieces; `feed` returns the text that is safe to send now. The reply ends
    before the first stop string (OpenAI's rule: the stop string is not returned); text that could be the start
    of a stop string is held back until it is known not to be one."""

    def __init__(self, stops: list[str]):
        self.stops, self.text, self.sent, self.hit = stops, "", 0, None

    def feed(self, piece: str) -> str:
        self.text += piece
        found = [(self.text.find(stop), stop) for stop in self.stops if stop in self.text]
        if found:
            cut, self.hit = min(found)
            self.text = self.text[:cut]
            return self._send(len(self.text))
        hold = max((k for stop in self.stops for k in range(1, len(stop)) if self.text.endswith(stop[:k])), default=0)
        return self._send(len(self.text) - hold)

    def rest(self) -> str:
        return self._send(len(self.text))

    def _send(self, upto: int) -> str:
        out = self.text[self.sent:upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return out


def batchable(model: Any, settings: Any) -> bool:
    """Whether replies with these settings can share a batch: a decoder-only model, no beam search."""
    return not model.config.is_encoder_decoder and settings.num_beams == 1


def generate_batch(model: Any, tokenizer: Any, requests: list[GenerationRequest]) -> list[dict | Exception]:
    """One result per request, in order: generate's dict ({text, tokens, prompt_tokens, completion_tokens,
    finish_reason, created, id}) or the exception that request alone raised."""
    rows: list[_Row | dict | Exception] = []
    for request in requests:
        try:
            rows.append(_Row(model, tokenizer, request) if batchable(model, request.settings)
                        else generate_alone(model, tokenizer, request))
        except Exception as error:  # noqa: BLE001 - this request's failure only
            rows.append(error)
    _run(model, [row for row in rows if isinstance(row, _Row)])
    return [row.outcome() if isinstance(row, _Row) else row for row in rows]


def generate_alone(model: Any, tokenizer: Any, request: GenerationRequest) -> dict:
    """A reply through `model.generate` (seq2seq, beam search), with the request's seed, stops and pieces."""
    import torch

    from ftune import replies

    if request.seed is not None:
        torch.manual_seed(request.seed)  # the model thread runs this request alone: the seed is its own
    if not request.stops and request.emit is None:
        return replies.generate(model, tokenizer, request.prompt, request.settings, request.min_tokens)
    watch, row = StopWatch(request.stops), _Emitter(request.emit)

    def on_text(piece: str) -> None:
        row.send(watch.feed(piece))
        if watch.hit is not None:
            raise _Stopped

    try:
        result = replies.generate(model, tokenizer, request.prompt, request.settings, request.min_tokens, on_text)
    except _Stopped:
        # the tokens generated up to the stop string, counted by encoding the text
        used = len(tokenizer(watch.text + watch.hit, add_special_tokens=False)["input_ids"])
        return _result(request, watch.text, [], "stop") | {"completion_tokens": used}
    row.send(watch.rest())
    return result


class _Stopped(Exception):
    """Raised from the text callback inside `model.generate` to end generation at a stop string."""


class _Emitter:
    """Sends a row's pieces; after a retry, the text its stream already got is not sent again."""

    def __init__(self, emit: Callable[[str], None] | None, already: str = ""):
        self.emit, self.already, self.sent = emit, already, ""

    def send(self, piece: str) -> None:
        if not piece or self.emit is None:
            return
        start, self.sent = len(self.sent), self.sent + piece
        if not (self.sent.startswith(self.already) or self.already.startswith(self.sent)):
            raise RuntimeError("the retried reply differs from the text already streamed")
        if len(self.sent) > len(self.already):
            self.emit(self.sent[max(start, len(self.already)):])


class _Row:
    """One request while its batch decodes: its logits processors, generator, tokens and streamed text."""

    def __init__(self, model: Any, tokenizer: Any, request: GenerationRequest, already: str = ""):
        import torch

        from ftune.tasks.generation import generate_kwargs

        self.request, self.tokenizer, self.error = request, tokenizer, None
        # the generation config and logits processors model.generate makes for this request alone
        config, _ = model._prepare_generation_config(None, min_new_tokens=request.min_tokens or None,
                                                     **generate_kwargs(request.settings, tokenizer))
        model._prepare_special_tokens(config, True, device=model.device)
        ones = torch.ones(1, len(request.prompt), dtype=torch.long, device=model.device)
        self.processors = model._get_logits_processor(config, input_ids_seq_length=len(request.prompt),
                                                      device=model.device, model_kwargs={"attention_mask": ones})
        eos = config._eos_token_tensor
        self.eos = set(eos.tolist()) if eos is not None else set()
        self.sample, self.max_new = bool(config.do_sample), config.max_new_tokens
        self.generator = None
        if self.sample:
            self.generator = torch.Generator(device=model.device)
            if request.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(request.seed)
        self.ids = torch.tensor([request.prompt], device=model.device)  # the row's own ids, as the processors see
        self.new: list[int] = []
        self.finish: str | None = None
        self.watch, self.shown = StopWatch(request.stops), ""
        self.watched = bool(request.stops) or request.emit is not None
        self.out = _Emitter(request.emit, already)

    def step(self, logits) -> bool:
        """Take this row's next token from its logits (1, vocab); True when the row is done."""
        import torch

        scores = self.processors(self.ids, logits)
        if self.sample:
            token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.generator))
        else:
            token = int(scores.argmax(-1))
        self.new.append(token)
        self.ids = torch.cat([self.ids, self.ids.new_tensor([[token]])], dim=1)
        if token in self.eos:
            self.finish = "stop"
        elif len(self.new) >= self.max_new:
            self.finish = "length"
        if self.watched:
            text = self.text()
            # a partial UTF-8 character waits for the next token
            if not text.endswith("\ufffd") and text.startswith(self.shown) and len(text) > len(self.shown):
                self.feed(text)
        return self.finish is not None

    def text(self) -> str:
        return self.tokenizer.decode(self.new, skip_special_tokens=True).strip()  # as `ftune predict` writes it

    def feed(self, text: str) -> None:
        if text.startswith(self.shown) and len(text) > len(self.shown) and self.watch.hit is None:
            piece, self.shown = text[len(self.shown):], text
            self.out.send(self.watch.feed(piece))
            if self.watch.hit is not None:
                self.finish = "stop"

    def outcome(self) -> dict | Exception:
        if self.error is not None:
            return self.error
        if self.watched:
            self.feed(self.text())  # what the last pieces held back
        if self.watch.hit is not None:
            return _result(self.request, self.watch.text, self.new, "stop")
        self.out.send(self.watch.rest())
        return _result(self.request, self.text(), self.new, self.finish or "length")


def _run(model: Any, rows: list[_Row]) -> None:
    """Decode the rows together; when that fails, each unfinished row again alone (only its own failure)."""
    if not rows:
        return
    try:
        _decode(model, rows)
    except Exception as error:  # noqa: BLE001 - retried row by row below
        if len(rows) == 1:
            rows[0].error = error
            return
        for row in [row for row in rows if row.finish is None]:
            fresh = _Row(model, row.tokenizer, row.request, already=row.out.sent)
            _run(model, [fresh])
            row.__dict__.update(fresh.__dict__)


def _decode(model: Any, rows: list[_Row]) -> None:
    import torch
    from transformers import DynamicCache

    device = model.device
    width = max(len(row.request.prompt) for row in rows)
    # left padding: every row's last prompt token in the last column; pad positions masked out
    ids = torch.tensor([[0] * (width - len(r.request.prompt)) + r.request.prompt for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r.request.prompt)) + [1] * len(r.request.prompt) for r in rows],
                        device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        while True:
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                           logits_to_keep=1).logits[:, -1].to(dtype=torch.float32)
            keep = [n for n, row in enumerate(rows) if not row.step(logits[n:n + 1])]
            if not keep:
                return
            if len(keep) < len(rows):  # finished rows leave the batch and the cache
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions, rows = mask[index], positions[index], [rows[n] for n in keep]
            ids = torch.tensor([[row.new[-1]] for row in rows], device=device)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            positions = positions[:, -1:] + 1


def _result(request: GenerationRequest, text: str, tokens: list[int], finish: str) -> dict:
    return {"text": text, "tokens": tokens, "prompt_tokens": len(request.prompt), "completion_tokens": len(tokens),
            "finish_reason": finish, "created": int(time.time()), "id": uuid.uuid4().hex[:24]}
