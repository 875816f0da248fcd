"""OpenAI-compatible routes of `ftune serve`: /v1/models and /v1/models/{id} for every run; for runs that
generate (`task.generates`) /v1/chat/completions and /v1/completions, with `stream: true` as server-sent
events ending in `data: [DONE]`; /v1/embeddings (embeddings.py) for encoder runs. Prompts are made by
`Inference.prompt` (the run's chat template, or the last user message for a text-to-text run), exactly as
`ftune predict` and `ftune chat` make them; greedy replies equal theirs. `stop`, `seed`, `max_tokens`,
`temperature`, `top_p` and `stream_options.include_usage` are honoured; what cannot be honoured (tools,
response_format other than text, logprobs, n > 1, echo, ...) is refused with 400 naming the parameter, and
another model's name with 404, so that OpenAI's clients raise BadRequestError / NotFoundError. Concurrent
requests are decoded together (the model thread takes every reply waiting: `Batcher.generate`,
`Inference.generate_batch`), each with its own settings, seed and stop strings, and each streamed on its own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from omegaconf import OmegaConf

from ftune.replies import GenerationRequest, PromptTooLong
from ftune.serve import embeddings
from ftune.serve.http import HttpError, Served, read_json

ROLES = ("system", "user", "assistant")
# parameters no reply here can honour: refused (400) when set to anything but their neutral value
REFUSED = {"tools": "tool calls are not supported", "functions": "function calls are not supported",
           "logprobs": "logprobs are not supported", "top_logprobs": "logprobs are not supported",
           "echo": "echo is not supported", "suffix": "suffix is not supported",
           "logit_bias": "logit_bias is not supported", "audio": "audio output is not supported",
           "prediction": "predicted outputs are not supported"}
NEUTRAL = (None, False, [], {}, 0, "")


def router(served: Served) -> APIRouter:
    routes, inference, settings, model_id = APIRouter(), served.inference, served.settings, served.model_id

    def model_card() -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "ftune"}

    @routes.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @routes.get("/v1/models/{name:path}")
    async def model(name: str):
        if name != model_id:
            raise HttpError(404, f"the model `{name}` does not exist; this server serves `{model_id}`", "model",
                            "model_not_found")
        return model_card()

    embeddings.add_route(routes, served)
    if not inference.generative:
        return routes

    async def request_of(request: Request, chat: bool) -> tuple[dict, list[int]]:
        body = await read_json(request, settings.max_body_bytes, status=400)
        check_common(body, model_id, chat)
        conversation, field = (chat_messages(body, settings.max_input_chars), "messages") if chat else \
            (completion_text(body, settings.max_input_chars), "prompt")
        try:
            return body, inference.prompt(conversation, cut=False)  # a long prompt is refused, never cut silently
        except PromptTooLong as error:
            raise HttpError(413, f"the prompt is {error.tokens} tokens; this run takes at most {error.limit}",
                            field) from error

    @routes.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer(*await request_of(request, chat=True), chat=True)

    @routes.post("/v1/completions")
    async def completions(request: Request):
        return await answer(*await request_of(request, chat=False), chat=False)

    async def answer(body: dict, prompt: list[int], chat: bool):
        generation, min_tokens = generation_settings(inference.task.cfg, body, settings.max_new_tokens)
        stops, seed = stop_strings(body), body.get("seed")
        kind = "chat.completion" if chat else "text_completion"
        ident, created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())
        if not body.get("stream"):
            result = await served.batcher.generate(GenerationRequest(prompt, generation, min_tokens, stops, seed))
            choice = ({"index": 0, "message": {"role": "assistant", "content": result["text"]}} if chat
                      else {"index": 0, "text": result["text"]})
            return {"id": ident, "object": kind, "created": created, "model": model_id,
                    "choices": [{**choice, "logprobs": None, "finish_reason": result["finish_reason"]}],
                    "usage": usage(result)}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(stream(prompt, generation, min_tokens, stops, seed, chat, ident, created,
                                        include_usage), media_type="text/event-stream")

    async def stream(prompt, generation, min_tokens, stops, seed, chat, ident, created, include_usage):
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()

        def on_text(piece: str) -> None:  # on the model thread: hand the piece to the event loop
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        request = GenerationRequest(prompt, generation, min_tokens, stops, seed, on_text)
        job = asyncio.ensure_future(served.batcher.generate(request))
        # after the last piece (call_soon_threadsafe keeps their order), also when generation fails
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None = None, finish: str | None = None, role: bool = False, **extra) -> str:
            if chat:
                choice = {"index": 0, "delta": {"role": "assistant"} if role else ({"content": delta} if delta else {}),
                          "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            body = {"id": ident, "object": kind, "created": created, "model": model_id, "choices": [choice], **extra}
            return f"data: {json.dumps(body)}\n\n"

        try:
            if chat:
                yield chunk(role=True)
            while (piece := await pieces.get()) is not None:
                yield chunk(piece)
            try:
                result = await job
            except Exception as error:  # noqa: BLE001 - the stream has started: the error is its last event
                yield f"data: {json.dumps({'error': {'message': f'{type(error).__name__}: {error}', 'type': 'server_error', 'param': None, 'code': 'internal_error'}})}\n\n"
                return
            yield chunk(finish=result["finish_reason"])
            if include_usage:  # OpenAI's last chunk: no choices, the usage
                body = {"id": ident, "object": kind, "created": created, "model": model_id, "choices": [],
                        "usage": usage(result)}
                yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not job.done():  # the client went away: its row leaves the batch at the next step
                request.cancelled = True
                job.cancel()

    return routes


def check_common(body: Any, model_id: str, chat: bool) -> None:
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object", "body")
    model = body.get("model")
    if model is not None and model != model_id:
        raise HttpError(404, f"the model `{model}` does not exist; this server serves `{model_id}`", "model",
                        "model_not_found")
    for name, why in REFUSED.items():
        if body.get(name) not in NEUTRAL:
            raise HttpError(400, f"{why} by this server (ftune serve)", name, "unsupported_parameter")
    if body.get("tool_choice") not in (None, "none"):
        raise HttpError(400, "tool calls are not supported by this server (ftune serve)", "tool_choice",
                        "unsupported_parameter")
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        raise HttpError(400, "only response_format {\"type\": \"text\"} is supported: this server does not "
                        "constrain replies to JSON", "response_format", "unsupported_parameter")
    for name in ("n", "best_of"):
        if body.get(name, 1) not in (1, None):
            raise HttpError(400, f"only {name}=1 is supported", name, "unsupported_parameter")
    for name in ("presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value not in (None, 0) and not (isinstance(value, int | float) and value == 0):
            raise HttpError(400, f"{name} is not supported (only 0)", name, "unsupported_parameter")
    if not isinstance(body.get("stream", False), bool | None):
        raise HttpError(400, "stream must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not body.get("stream")):
        raise HttpError(400, "stream_options must be an object, and only with stream: true", "stream_options")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise HttpError(400, "seed must be an integer", "seed")
    stop_strings(body)


def stop_strings(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise HttpError(400, "stop must be a non-empty string or a list of up to 4 non-empty strings", "stop")
    return stops


def chat_messages(body: dict, max_chars: int) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "messages must be a non-empty list of {role, content}", "messages")
    clean = []
    for number, message in enumerate(messages):
        field = f"messages[{number}]"
        role = message.get("role") if isinstance(message, dict) else None
        role = "system" if role == "developer" else role  # OpenAI's newer name for the system role
        if role not in ROLES:
            raise HttpError(400, f"each message needs a role ({', '.join(ROLES)}) and content", f"{field}.role")
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise HttpError(400, "only text content parts are supported", f"{field}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise HttpError(400, "content must be a string (or text parts)", f"{field}.content")
        if len(content) > max_chars:
            raise HttpError(413, f"content longer than {max_chars} characters", f"{field}.content")
        clean.append({"role": role, "content": content})
    if all(m["role"] != "user" for m in clean):
        raise HttpError(400, "the conversation has no user message", "messages")
    return clean


def completion_text(body: dict, max_chars: int) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise HttpError(400, "prompt must be a non-empty string (one prompt per request)", "prompt")
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
            raise HttpError(400, "max_tokens must be a positive integer", "max_tokens")
        if max_tokens > cap:
            raise HttpError(413, f"max_tokens {max_tokens} over this server's limit of {cap}", "max_tokens")
        updates["max_new_tokens"] = max_tokens
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            raise HttpError(400, "temperature must be a number from 0 to 2", "temperature")
        updates.update(do_sample=temperature > 0, temperature=float(temperature) or 1.0)
    top_p = body.get("top_p")
    if top_p is not None:
        if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
            raise HttpError(400, "top_p must be a number in (0, 1]", "top_p")
        updates["top_p"] = float(top_p)
    settings = OmegaConf.merge(task_cfg.generation, updates)
    settings.max_new_tokens = min(settings.max_new_tokens, cap)
    min_tokens = body.get("min_tokens", 0)  # vLLM's extension: no end of turn before this many tokens
    if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or not 0 <= min_tokens <= settings.max_new_tokens:
        raise HttpError(400, "min_tokens must be an integer from 0 to max_tokens", "min_tokens")
    return settings, min_tokens
