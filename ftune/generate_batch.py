"""Several replies generated together (`Inference.generate_batch`, used by `ftune serve`'s OpenAI routes).

The prompts are left-padded into one forward pass (attention mask and position ids, so padding moves no row's
positions), the KV cache (transformers' DynamicCache) is kept, then every active row gets one token per step.
A row leaves the batch (its cache rows dropped, and cache columns no row needs any more) at an end-of-sequence
token, at its `max_new_tokens`, or at one of its stop strings (checked on the decoded text, across token
boundaries: `StopWatch`), and is answered at once (`on_done`). Between steps, requests that arrived meanwhile
may join (`more`): their prompts get one forward pass of their own, then their cache is left-padded to the
batch's width and appended, so nobody waits for a running batch to end. (Models whose cache is not plain
full-attention layers, e.g. sliding windows, run static batches: newcomers wait for the next batch.)

Each row keeps its own settings: the logits processors `model.generate` would build for it alone (repetition
penalty, min_new_tokens, temperature, top_k, top_p: transformers' own helpers), and for sampling its own
`torch.Generator`, seeded by the request's `seed`, so a seeded request samples the same tokens alone and in a
batch (and as `model.generate` after `torch.manual_seed(seed)`). Greedy rows pick the same tokens alone and
in a batch up to float rounding: padding changes the shapes of the matrix products, so logits differ in the
last bits (~1e-7 in fp32 on the tiny test Llama) and a near-tie could flip; tests/inference/
test_generate_batch.py checks that the tokens are equal. A failure while a batch runs is retried row by row,
so only the request that caused it fails (text a stream already got is not sent again). Seq2seq models and beam
search are generated one request at a time (`model.generate`), with the same stop strings and streaming.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftune.replies import Emitter, GenerationRequest, StopWatch, generate_alone, reply

Done = Callable[[GenerationRequest, Any], None]


def batchable(model: Any, settings: Any) -> bool:
    """Whether replies with these settings can share a batch: a decoder-only model, no beam search."""
    return not model.config.is_encoder_decoder and settings.num_beams == 1


def generate_batch(model: Any, tokenizer: Any, requests: list[GenerationRequest],
                   more: Callable[[int], list[GenerationRequest]] | None = None,
                   on_done: Done | None = None) -> list[dict | Exception]:
    """One result per request (those given, then those that joined), in order: generate's dict ({text, tokens,
    prompt_tokens, completion_tokens, finish_reason, created, id}) or the exception that request alone raised.
    `more(active)`, asked between steps while rows are active, returns requests to join the batch; `on_done`
    receives each request's result as soon as it is known."""
    results: dict[int, Any] = {}
    order = list(requests)

    def finish(request: GenerationRequest, result: Any) -> None:
        results[id(request)] = result
        if on_done is not None:
            on_done(request, result)

    def admit(new: list[GenerationRequest]) -> list[_Row]:
        rows = []
        for request in new:
            try:
                if batchable(model, request.settings):
                    rows.append(_Row(model, tokenizer, request, finish))
                else:
                    finish(request, generate_alone(model, tokenizer, request))
            except Exception as error:  # noqa: BLE001 - this request's failure only
                finish(request, error)
        return rows

    def joining(active: int) -> list[_Row]:
        new = more(active)
        order.extend(new)
        return admit(new)

    _run(model, admit(requests), joining if more is not None and _joinable(model) else None)
    return [results[id(request)] for request in order]


class _Row:
    """One request while its batch decodes: its logits processors, generator, tokens and streamed text."""

    def __init__(self, model: Any, tokenizer: Any, request: GenerationRequest, finish: Done, already: str = ""):
        import torch

        from ftune.tasks.generation import generate_kwargs

        self.request, self.tokenizer, self.finish, self.done = request, tokenizer, finish, False
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
        self.reason: str | None = None
        self.watch, self.shown = StopWatch(request.stops), ""
        self.watched = bool(request.stops) or request.emit is not None
        self.out = Emitter(request.emit, already)

    def step(self, logits) -> bool:
        """Take this row's next token from its logits (1, vocab); True when the row is done (and answered)."""
        import torch

        scores = self.processors(self.ids, logits)
        if self.sample:
            token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.generator))
        else:
            token = int(scores.argmax(-1))
        self.new.append(token)
        self.ids = torch.cat([self.ids, self.ids.new_tensor([[token]])], dim=1)
        if token in self.eos:
            self.reason = "stop"
        elif len(self.new) >= self.max_new:
            self.reason = "length"
        elif self.request.cancelled:
            self.reason = "cancelled"
        if self.watched:
            text = self.text()
            if not text.endswith("\ufffd"):  # a partial UTF-8 character waits for the next token
                self.feed(text)
        if self.reason is not None:
            self.answer(self.outcome())
        return self.done

    def text(self) -> str:
        return self.tokenizer.decode(self.new, skip_special_tokens=True).strip()  # as `ftune predict` writes it

    def feed(self, text: str) -> None:
        if text.startswith(self.shown) and len(text) > len(self.shown) and self.watch.hit is None:
            piece, self.shown = text[len(self.shown):], text
            self.out.send(self.watch.feed(piece))
            if self.watch.hit is not None:
                self.reason = "stop"

    def outcome(self) -> dict:
        if self.watched:
            self.feed(self.text())  # what the last pieces held back
        if self.watch.hit is not None:
            return reply(self.request, self.watch.text, self.new, "stop")
        self.out.send(self.watch.rest())
        return reply(self.request, self.text(), self.new, self.reason or "length")

    def answer(self, result: Any) -> None:
        self.done = True
        self.finish(self.request, result)

    def restart(self, model: Any) -> None:
        """This row from its start (to run alone), keeping what its stream already got."""
        self.__init__(model, self.tokenizer, self.request, self.finish, already=self.out.sent)


def _joinable(model: Any) -> bool:
    """Whether a running batch's cache can take new rows: every layer a plain full-attention DynamicLayer."""
    from transformers import DynamicCache

    return _plain(DynamicCache(config=model.config))


def _run(model: Any, rows: list[_Row], joining: Callable[[int], list[_Row]] | None) -> None:
    """Decode the rows (and those that join); when that fails, each unanswered row again alone."""
    everyone = list(rows)
    if not everyone:
        return
    try:
        _decode(model, everyone, joining)
    except Exception as error:  # noqa: BLE001 - retried row by row below: only the failing request fails
        if len(everyone) == 1:
            everyone[0].answer(error)
            return
        for row in [row for row in everyone if not row.done]:
            row.restart(model)
            _run(model, [row], None)


def _decode(model: Any, everyone: list[_Row], joining: Callable[[int], list[_Row]] | None) -> None:
    import torch

    with torch.inference_mode():
        batch = _start(model, list(everyone), joining is not None)
        while True:
            new = joining(len(batch.rows)) if joining is not None else []
            if new:
                everyone.extend(new)
                batch = batch.join(_start(model, new, True))
            if not batch.rows:
                return
            batch.step(model)


def _start(model: Any, rows: list[_Row], joinable: bool) -> _Batch:
    """The rows' prefill; when it fails (and batches can be joined), each row's own: only a bad prompt fails."""
    try:
        return _Batch.prefill(model, rows)
    except Exception as error:
        if not joinable:
            raise
        rows = [row for row in rows if not row.done]
        if len(rows) == 1:
            rows[0].answer(error)
            return _Batch([], None, None, None)
        batch = _Batch([], None, None, None)
        for row in rows:
            row.restart(model)
            batch = batch.join(_start(model, [row], True))
        return batch


class _Batch:
    """The active rows with their KV cache, attention mask (rows × columns) and last positions."""

    def __init__(self, rows: list[_Row], cache: Any, mask, positions):
        self.rows, self.cache, self.mask, self.positions = rows, cache, mask, positions

    @classmethod
    def prefill(cls, model: Any, rows: list[_Row]) -> _Batch:
        """The prompts' forward pass (left-padded) and each row's first token."""
        import torch
        from transformers import DynamicCache

        prompts = [row.request.prompt for row in rows]
        width = max(len(prompt) for prompt in prompts)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        batch = cls(rows, cache, mask, positions[:, -1:])
        batch.pick(_forward(model, ids, mask, positions, cache))
        return batch

    def step(self, model: Any) -> None:
        import torch

        ids = torch.tensor([[row.new[-1]] for row in self.rows], device=self.mask.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        self.positions = self.positions + 1
        self.pick(_forward(model, ids, self.mask, self.positions, self.cache))

    def pick(self, logits) -> None:
        """Each row's next token; rows that are done leave the batch and the cache."""
        import torch

        keep = [n for n, row in enumerate(self.rows) if not row.step(logits[n:n + 1])]
        if len(keep) == len(self.rows):
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.rows, self.mask, self.positions = [self.rows[n] for n in keep], self.mask[index], self.positions[index]
        unused = int(self.mask.any(0).int().argmax()) if keep else 0  # leading columns that are padding for all
        if unused and _plain(self.cache):
            self._resize(lambda t: t[:, :, unused:])
            self.mask = self.mask[:, unused:]

    def join(self, other: _Batch) -> _Batch:
        """This batch and another (new rows after their prefill) as one: the narrower one left-padded."""
        import torch
        import torch.nn.functional as F

        if not other.rows:
            return self
        if not self.rows:
            return other
        width = max(self.mask.shape[1], other.mask.shape[1])
        for batch in (self, other):
            grow = width - batch.mask.shape[1]
            if grow:
                batch._resize(lambda t, grow=grow: F.pad(t, (0, 0, grow, 0)))
                batch.mask = F.pad(batch.mask, (grow, 0))
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys, mine.values = torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values])
        self.rows = self.rows + other.rows
        self.mask, self.positions = torch.cat([self.mask, other.mask]), torch.cat([self.positions, other.positions])
        return self

    def _resize(self, change: Callable) -> None:
        for layer in self.cache.layers:
            layer.keys, layer.values = change(layer.keys), change(layer.values)


def _plain(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _forward(model: Any, ids, mask, positions, cache):
    """The logits of each row's last position, in fp32."""
    import torch

    output = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                   logits_to_keep=1)
    return output.logits[:, -1].to(dtype=torch.float32)
