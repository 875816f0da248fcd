"""One OpenAI-style generation on the model thread: `Inference.generate` with a request's `seed` and `stop`
strings. Stop strings are checked on the decoded reply as it grows (across token boundaries); the reply ends
before the first match (OpenAI's rule: the stop string is not returned) and generation stops there. While
streaming, text that could be the start of a stop string is held back until it is known not to be one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _Stopped(Exception):
    """Raised from the text callback inside `model.generate` to end generation at a stop string."""


class StopWatch:
    """Feeds on the reply's text pieces; `feed` returns the text that is safe to send now."""

    def __init__(self, stops: list[str]):
        self.stops, self.text, self.sent, self.hit = stops, "", 0, None

    def feed(self, piece: str) -> str:
        self.text += piece
        found = [(self.text.find(stop), stop) for stop in self.stops if stop in self.text]
        if found:
            cut, self.hit = min(found)
            self.full = self.text[:cut + len(self.hit)]
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


def generate(inference: Any, prompt: list[int], settings: Any, min_tokens: int, stops: list[str],
             seed: int | None, emit: Callable[[str], None] | None = None) -> dict:
    """On the model thread: Inference.generate's dict, cut at the first stop string (finish_reason "stop");
    `emit` receives the reply's text piece by piece (the pieces join to the returned text)."""
    if seed is not None:
        import torch

        torch.manual_seed(seed)  # the model thread runs one request at a time: the seed is this request's
    if not stops and emit is None:
        return inference.generate(prompt, settings, min_tokens)
    watch = StopWatch(stops)

    def on_text(piece: str) -> None:
        out = watch.feed(piece)
        if out and emit is not None:
            emit(out)
        if watch.hit is not None:
            raise _Stopped

    try:
        result = inference.generate(prompt, settings, min_tokens, on_text)
    except _Stopped:
        # the tokens generated up to and including the stop string, counted by encoding their text
        used = len(inference.tokenizer(watch.full, add_special_tokens=False)["input_ids"])
        return {"text": watch.text, "prompt_tokens": len(prompt), "completion_tokens": used, "finish_reason": "stop"}
    tail = watch.rest()
    if tail and emit is not None:
        emit(tail)
    return result
