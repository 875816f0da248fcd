"""OpenAI-compatible routes of `ftune serve` for generative runs (sft, seq2seq): /v1/models,
/v1/chat/completions and /v1/completions, with `stream: true` as server-sent events ending in
`data: [DONE]`. Chat prompts are rendered with the run's chat template (the one saved in best/), exactly
as `ftune predict` and `ftune chat` render them; greedy replies equal theirs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from fastapi import Request

from ftune.serving import TokenStream, generate, generation_settings

ROLES = ("system", "user", "assistant")


def add_routes(app, inference: Any, cfg: Any, batcher, model_id: str, read_json, HttpError, StreamingResponse) -> None:
    task, tokenizer = inference.task, inference.tokenizer

    def check_common(body: Any) -> None:
        if not isinstance(body, dict):
            raise HttpError(422, "the body must be a JSON object", "body")
        if body.get("n", 1) != 1:
            raise HttpError(422, "only n=1 is supported", "n")
        if body.get("stop"):
            raise HttpError(422, "stop sequences are not supported; the reply ends at the model's end of turn", "stop")
        if not isinstance(body.get("stream", False), bool):
            raise HttpError(422, "stream must be true or false", "stream")

    def chat_prompt(body: dict) -> list[int]:
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
            if len(content) > cfg.max_input_chars:
                raise HttpError(413, f"content longer than {cfg.max_input_chars} characters", f"{field}.content")
            clean.append({"role": message["role"], "content": content})
        if all(m["role"] != "user" for m in clean):
            raise HttpError(422, "the conversation has no user message", "messages")
        if task.name == "seq2seq":  # a text-to-text model answers the last user message
            return source_ids([m["content"] for m in clean if m["role"] == "user"][-1], "messages")
        last = max(i for i, m in enumerate(clean) if m["role"] != "assistant")
        text = task.render(clean[:last + 1], generation_prompt=True)
        return limited(tokenizer(text, add_special_tokens=False)["input_ids"], task.cfg.max_length, "messages")

    def completion_prompt(body: dict) -> list[int]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise HttpError(422, "prompt must be a non-empty string", "prompt")
        if len(prompt) > cfg.max_input_chars:
            raise HttpError(413, f"prompt longer than {cfg.max_input_chars} characters", "prompt")
        if task.name == "seq2seq":
            return source_ids(prompt, "prompt")
        return limited(tokenizer(prompt, add_special_tokens=False)["input_ids"], task.cfg.max_length, "prompt")

    def source_ids(text: str, field: str) -> list[int]:
        ids = tokenizer(task.cfg.prefix + text)["input_ids"]
        return limited(ids, task.cfg.max_source_length, field)

    def limited(ids: list[int], most: int, field: str) -> list[int]:
        if len(ids) > most:
            raise HttpError(413, f"the prompt is {len(ids)} tokens; this run takes at most {most}", field)
        return ids

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "ftune"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request, cfg.max_body_bytes)
        check_common(body)
        return await answer(body, chat_prompt(body), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request, cfg.max_body_bytes)
        check_common(body)
        return await answer(body, completion_prompt(body), chat=False)

    async def answer(body: dict, prompt: list[int], chat: bool):
        settings, min_tokens = generation_settings(task.cfg, body, cfg.max_new_tokens)
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            result = await batcher.call(generate, inference, prompt, settings, min_tokens)
            choice = ({"index": 0, "message": {"role": "assistant", "content": result["text"]}} if chat
                      else {"index": 0, "text": result["text"]})
            return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{result['id']}", "object": kind, "created": result["created"],
                    "model": model_id, "choices": [{**choice, "finish_reason": result["finish_reason"]}],
                    "usage": usage(result)}
        return StreamingResponse(stream(prompt, settings, min_tokens, chat), media_type="text/event-stream")

    async def stream(prompt: list[int], settings: Any, min_tokens: int, chat: bool):
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        job = asyncio.ensure_future(batcher.call(generate, inference, prompt, settings, min_tokens,
                                                 TokenStream(loop, queue)))
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
        ids, sent = [], ""
        while True:
            token = await queue.get()
            if token is None:
                break
            ids.append(token)
            # the reply as `ftune predict` would end it (stripped); a partial UTF-8 character waits for the next token
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            if not text.endswith("\ufffd") and text.startswith(sent) and len(text) > len(sent):
                yield chunk(text[len(sent):])
                sent = text
        result = await job
        if result["text"].startswith(sent) and len(result["text"]) > len(sent):
            yield chunk(result["text"][len(sent):])
        yield chunk(finish=result["finish_reason"])
        yield "data: [DONE]\n\n"


def usage(result: dict) -> dict:
    return {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}
