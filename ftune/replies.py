"""How `Inference` generates: the prompt's token ids, one reply with its text streamed piece by piece, and
a blocking iterator over those pieces (chat); what one reply of `ftune serve` needs besides (a request with its
stop strings and seed, `StopWatch`, `generate_alone`); ftune/generate_batch.py decodes several together. Kept apart from ftune/inference.py only for its size; callers
use the `Inference` methods (`prompt`, `generate`, `stream`), not this module.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ftune.errors import FtuneError


class PromptTooLong(FtuneError):
    """A prompt over the run's limit, refused rather than cut (serve answers it with 413)."""

    def __init__(self, tokens: int, limit: int):
        super().__init__(f"the prompt is {tokens} tokens; this run takes at most {limit}", where="prompt",
                         fix="shorten the prompt or the conversation")
        self.tokens, self.limit = tokens, limit


def prompt_ids(inference: Any, conversation: list[dict] | str, cut: bool) -> list[int]:
    task, tokenizer, limit = inference.task, inference.tokenizer, inference.max_prompt_tokens
    if task.chat_input == "last_user_message":  # a text-to-text model answers the last user message
        text = conversation if isinstance(conversation, str) else \
            [m["content"] for m in conversation if m["role"] == "user"][-1]
        ids = tokenizer(task.cfg.prefix + text)["input_ids"]  # the source as the task featurises it
        if len(ids) > limit and cut:  # as training truncated it: the start, special tokens kept
            return tokenizer(task.cfg.prefix + text, truncation=True, max_length=limit)["input_ids"]
    elif task.chat_input == "messages":
        if isinstance(conversation, str):  # a completion: the text as it is, no template
            ids = tokenizer(conversation, add_special_tokens=False)["input_ids"]
        elif cut:  # the task's own prompt: the template up to the last user turn, most recent tokens kept
            return task.prompt_ids(conversation)
        else:
            last = max(i for i, m in enumerate(conversation) if m["role"] != "assistant")
            ids = tokenizer(task.render(conversation[:last + 1], generation_prompt=True),
                            add_special_tokens=False)["input_ids"]
        if len(ids) > limit and cut:
            return ids[-limit:]
    else:
        raise FtuneError(f"task={task.name} takes no prompts", where="task",
                         fix="use a run of a generating task (e.g. task=sft or task=seq2seq)")
    if len(ids) > limit:
        raise PromptTooLong(len(ids), limit)
    return ids


def generate(model: Any, tokenizer: Any, prompt: list[int], settings: Any, min_tokens: int = 0,
             on_text: Callable[[str], None] | None = None) -> dict:
    import torch

    from ftune.tasks.generation import generate_kwargs

    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    pieces = _Pieces(tokenizer, on_text) if on_text is not None else None
    # transformers streams greedy and sampled decoding only: a beam search's reply comes as one piece at the end
    streamer = pieces if settings.num_beams == 1 else None
    with torch.inference_mode():
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                                streamer=streamer, min_new_tokens=min_tokens or None,
                                **generate_kwargs(settings, tokenizer))
    new = output[0, 0 if model.config.is_encoder_decoder else len(prompt):].tolist()
    ended = tokenizer.eos_token_id in new
    text = tokenizer.decode(new, skip_special_tokens=True).strip()  # the reply as `ftune predict` writes it
    if pieces is not None:
        pieces.finish(text)
    return {"text": text, "tokens": new, "prompt_tokens": len(prompt), "completion_tokens": len(new),
            "finish_reason": "stop" if ended or len(new) < settings.max_new_tokens else "length",
            "created": int(time.time()), "id": uuid.uuid4().hex[:24]}


class _Pieces:
    """A transformers streamer (put/end) that turns new token ids into new text: each piece is what the reply
    (decoded, stripped as `ftune predict` strips it) gained since the last one, so the pieces join to it."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]):
        self.tokenizer, self.on_text, self.first = tokenizer, on_text, True
        self.ids: list[int] = []
        self.sent = ""

    def put(self, value) -> None:
        if self.first:  # the prompt (causal LM) or the decoder's start token (seq2seq)
            self.first = False
            return
        self.ids += value.reshape(-1).tolist()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).strip()
        # a partial UTF-8 character waits for the next token
        if not text.endswith("\ufffd") and text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(text[len(self.sent):])
            self.sent = text

    def end(self) -> None:
        pass  # `finish` sends the rest once the final text is known

    def finish(self, text: str) -> None:
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(text[len(self.sent):])
            self.sent = text


class TextStream:
    """Iterates over a reply's text pieces while `run(on_text)` generates on a worker thread; after the last
    piece, `result` is run's return value (an error in the thread is raised here)."""

    def __init__(self, run: Callable[[Callable[[str], None]], dict]):
        self.result: dict | None = None
        self._pieces: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(run,), name="ftune-generate", daemon=True)
        self._thread.start()

    def _work(self, run) -> None:
        try:
            self.result = run(self._pieces.put)
        except BaseException as error:  # noqa: BLE001 - handed to the reading thread
            self._error = error
        finally:
            self._pieces.put(None)

    def __iter__(self) -> Iterator[str]:
        while (piece := self._pieces.get()) is not None:
            yield piece
        self._thread.join()
        if self._error is not None:
            raise self._error


@dataclass
class GenerationRequest:
    """One reply to generate: the prompt's token ids, a task's `generation` settings (with the request's
    max_new_tokens / temperature / top_p applied), no end of sequence before `min_tokens`, `stops` ending the
    reply before their first occurrence, the sampling `seed`, and `emit` receiving the reply's text piece by
    piece (the pieces join to the returned text). `cancelled` is set when its client has gone: a batched row
    then ends at its next token (finish_reason "cancelled")."""

    prompt: list[int]
    settings: Any
    min_tokens: int = 0
    stops: list[str] = field(default_factory=list)
    seed: int | None = None
    emit: Callable[[str], None] | None = None
    cancelled: bool = False


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


def generate_alone(model: Any, tokenizer: Any, request: GenerationRequest) -> dict:
    """A reply through `model.generate` (seq2seq, beam search), with the request's seed, stops and pieces."""
    import torch

    if request.seed is not None:
        torch.manual_seed(request.seed)  # the model thread runs this request alone: the seed is its own
    if not request.stops and request.emit is None:
        return generate(model, tokenizer, request.prompt, request.settings, request.min_tokens)
    watch, row = StopWatch(request.stops), Emitter(request.emit)

    def on_text(piece: str) -> None:
        row.send(watch.feed(piece))
        if watch.hit is not None:
            raise _Stopped

    try:
        result = generate(model, tokenizer, request.prompt, request.settings, request.min_tokens, on_text)
    except _Stopped:
        # the tokens generated up to the stop string, counted by encoding the text
        used = len(tokenizer(watch.text + watch.hit, add_special_tokens=False)["input_ids"])
        return reply(request, watch.text, [], "stop") | {"completion_tokens": used}
    row.send(watch.rest())
    return result


class _Stopped(Exception):
    """Raised from the text callback inside `model.generate` to end generation at a stop string."""


class Emitter:
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


def reply(request: GenerationRequest, text: str, tokens: list[int], finish: str) -> dict:
    """generate's dict for a request's reply."""
    return {"text": text, "tokens": tokens, "prompt_tokens": len(request.prompt), "completion_tokens": len(tokens),
            "finish_reason": finish, "created": int(time.time()), "id": uuid.uuid4().hex[:24]}
