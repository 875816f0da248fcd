"""OpenAI-compatible routes of `ftune serve` for runs that generate (`task.generates`): /v1/models,
/v1/chat/completions and /v1/completions, with `stream: true` as server-sent events ending in
`data: [DONE]`. Prompts are made by `Inference.prompt` (the run's chat template, or the last user message
for a text-to-text run), exactly as `ftune predict` and `ftune chat` make them; greedy replies equal theirs.
This module checks the request and shapes the answer; the model work is `Inference.generate`'s.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from omegaconf import OmegaConf

from ftune.replies import PromptTooLong
from ftune.serve.http import HttpError, Served, read_json

ROLES = ("system", "user", "assistant")


def router(served: Served) -> APIRouter:
    routes, inference, settings, model_id = APIRouter(), served.inference, served.settings, served.model_id

    def prompt_of(body: dict, chat: bool) -> list[int]:
        conversation, field = (chat_messages(body, settings.max_input_chars), "messages") if chat else \
            (completion_text(body, settings.max_input_chars), "prompt")
        try:
            return inference.prompt(conversation, cut=False)  # a long prompt is refused, never cut silently
        except PromptTooLong as error:
            raise HttpError(413, f"the prompt is {error.tokens} tokens; this run takes at most {error.limit}",
                            field) from error

    @routes.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "ftune"}]}

    @routes.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        check_common(body)
        return await answer(body, prompt_of(body, chat=True), chat=True)

    @routes.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        check_common(body)
        return await answer(body, prompt_of(body, chat=False), chat=False)

    async def answer(body: dict, prompt: list[int], chat: bool):
        generation, min_tokens = generation_settings(inference.task.cfg, body, settings.max_new_tokens)
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            result = await served.batcher.call(inference.generate, prompt, generation, min_tokens)
            choice = ({"index": 0, "message": {"role": "assistant", "content": result["text"]}} if chat
                      else {"index": 0, "text": result["text"]})
            return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{result['id']}", "object": kind, "created": result["created"],
                    "model": model_id, "choices": [{**choice, "finish_reason": result["finish_reason"]}],
                    "usage": usage(result)}
        return StreamingResponse(stream(prompt, generation, min_tokens, chat), media_type="text/event-stream")

    async def stream(prompt: list[int], generation: Any, min_tokens: int, chat: bool):
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()

        def on_text(piece: str) -> None:  # on the model thread: hand the piece to the event loop
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        job = asyncio.ensure_future(served.batcher.call(inference.generate, prompt, generation, min_tokens, on_text))
        # after the last piece (call_soon_threadsafe keeps their order), also when generation fails
        job.add_done_callback(lambda _: pieces.put_nowait(None))
        kind = "chat.completion.chunk" if chat else "text_completion"
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"

        def chunk(delta: str | None = None, finish: str | None = None, role: bool = False) -> str:
            if chat:
                choice = {"index": 0, "delta": {"role": "assistant"} if role else ({"content": delta} if delta else {}),
                          "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": finish}
            return f"data: {json.dumps({'id': ident, 'object': kind, 'model': model_id, 'choices': [choice]})}\n\n"

        if chat:
            yield chunk(role=True)
        while (piece := await pieces.get()) is not None:
            yield chunk(piece)
        result = await job
        yield chunk(finish=result["finish_reason"])
        yield "data: [DONE]\n\n"

    return routes


def check_common(body: Any) -> None:
    if not isinstance(body, dict):
        raise HttpError(422, "the body must be a JSON object", "body")
    if body.get("n", 1) != 1:
        raise HttpError(422, "only n=1 is supported", "n")
    if body.get("stop"):
        raise HttpError(422, "stop sequences are not supported; the reply ends at the model's end of turn", "stop")
    if not isinstance(body.get("stream", False), bool):
        raise HttpError(422, "stream must be true or false", "stream")


def chat_messages(body: dict, max_chars: int) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HttpError(422, "messages must be a non-empty list of {role, content}", "messages")
    clean = []
    for number, message in enumerate(messages):
        field = f"messages[{number}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise HttpError(422, f"each message needs a role ({', '.join(ROLES)}) and content", f"{field}.role")
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise HttpError(422, "content must be a string (or text parts)", f"{field}.content")
        if len(content) > max_chars:
            raise HttpError(413, f"content longer than {max_chars} characters", f"{field}.content")
        clean.append({"role": message["role"], "content": content})
    if all(m["role"] != "user" for m in clean):
        raise HttpError(422, "the conversation has no user message", "messages")
    return clean


def completion_text(body: dict, max_chars: int) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise HttpError(422, "prompt must be a non-empty string", "prompt")
    if len(prompt) > max_chars:
        raise HttpError(413, f"prompt longer than {max_chars} characters", "prompt")
    return prompt


def usage(result: dict) -> dict:
    return {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}


def generation_settings(task_cfg: Any, body: dict, cap: int) -> Any:
    """The run's generation settings with a request's max_tokens / temperature / top_p on top."""
    updates: dict = {}
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise HttpError(422, "max_tokens must be a positive integer", "max_tokens")
        if max_tokens > cap:
            raise HttpError(413, f"max_tokens {max_tokens} over this server's limit of {cap}", "max_tokens")
        updates["max_new_tokens"] = max_tokens
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            raise HttpError(422, "temperature must be a number from 0 to 2", "temperature")
        updates.update(do_sample=temperature > 0, temperature=float(temperature) or 1.0)
    top_p = body.get("top_p")
    if top_p is not None:
        if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
            raise HttpError(422, "top_p must be a number in (0, 1]", "top_p")
        updates["top_p"] = float(top_p)
    settings = OmegaConf.merge(task_cfg.generation, updates)
    settings.max_new_tokens = min(settings.max_new_tokens, cap)
    min_tokens = body.get("min_tokens", 0)  # vLLM's extension: no end of turn before this many tokens
    if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or not 0 <= min_tokens <= settings.max_new_tokens:
        raise HttpError(422, "min_tokens must be an integer from 0 to max_tokens", "min_tokens")
    return settings, min_tokens
