"""Several replies generated together (`Inference.generate_batch`, used by `ftune serve`'s OpenAI routes).

The prompts get one prefill pass (left-padded; a prefix they share computed once), then every active row gets
one token per step (ftune/batch_cache.py holds the rows' KV cache). A row leaves the batch at an end-of-sequence
token, at its `max_new_tokens`, or at one of its stop strings (checked on the decoded text, across token
boundaries: `StopWatch`), and is answered at once (`on_done`). Between steps, requests that arrived meanwhile
may join (`more`): their prompts get a prefill of their own and their cache is appended to the batch's, so
nobody waits for a running batch to end (models whose cache cannot be joined run static batches).

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

from ftune.batch_cache import Batch, joinable
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

    _run(model, admit(requests), joining if more is not None and joinable(model) else None)
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
        if not self.done:  # once per request, whatever fails after
            self.done = True
            self.finish(self.request, result)

    def restart(self, model: Any) -> None:
        """This row from its start (to run alone), keeping what its stream already got."""
        self.__init__(model, self.tokenizer, self.request, self.finish, already=self.out.sent)


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


def _start(model: Any, rows: list[_Row], joinable: bool) -> Batch:
    """The rows' prefill; when it fails (and batches can be joined), each row's own: only a bad prompt fails."""
    try:
        return Batch.prefill(model, rows)
    except Exception as error:
        if not joinable:
            raise
        rows = [row for row in rows if not row.done]
        if len(rows) == 1:
            rows[0].answer(error)
            return Batch([], None, None, None)
        batch = Batch([], None, None, None)
        for row in rows:
            row.restart(model)
            batch = batch.join(_start(model, [row], True))
        return batch
