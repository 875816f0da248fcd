"""The HTTP app of `ftune serve` (FastAPI), over one loaded `Inference`.

One worker thread owns the model: every model call is queued to it, so requests never run the model
concurrently. /predict requests that arrive within `batch_window_ms` of each other are joined into one
model pass of up to `batch_size` inputs (encoder tasks; generative runs take their requests one by one)
and their answers split back. Errors are JSON `{"error": {"message", "type", "param"}}` (OpenAI's shape)
with 401 (API key), 413 (body, inputs or input length over the limits), 422 (malformed input, naming the
field); an unexpected failure is a 500 for that request only and the server goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request  # the serve command checks first that the serve extra is installed
from omegaconf import OmegaConf

from ftune.errors import FtuneError

log = logging.getLogger("ftune")


class HttpError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


KINDS = {401: "authentication_error", 413: "request_too_large", 422: "invalid_request_error", 500: "server_error"}


class Batcher:
    """Joins concurrent requests into model passes on the single model thread."""

    def __init__(self, run, max_batch: int, window_s: float):
        self.run, self.max_batch, self.window_s = run, max_batch, window_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftune-model")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0  # model passes so far (/info shows it: batching at work)

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, items: list) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def call(self, function, *args):
        """Any other model call (generation), in turn with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await self.queue.get()]
            count = len(group[0][0])
            deadline = loop.time() + self.window_s
            while self.window_s > 0 and count < self.max_batch:
                try:
                    group.append(await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0)))
                except TimeoutError:
                    break
                count += len(group[-1][0])
            flat = [item for items, _ in group for item in items]
            try:
                results = await loop.run_in_executor(self.executor, self.run, flat)
            except Exception as error:  # noqa: BLE001 - every waiting request gets the failure, the loop goes on
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            start = 0
            for items, future in group:
                if not future.done():
                    future.set_result(results[start:start + len(items)])
                start += len(items)


def create_app(inference: Any, cfg: Any):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    generative = inference.generative
    window = 0.0 if generative else cfg.batch_window_ms / 1000
    batcher = Batcher(inference.predict_json, inference.batch_size, window)
    model_id = _model_id(inference)
    state = {"requests": 0, "in_flight": 0}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        log.info("serving %s (task %s, %s) on http://%s:%d", inference.folder, inference.task.name,
                 inference.runtime, cfg.host, cfg.port)
        yield
        await batcher.stop()

    app = FastAPI(title="ftune serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(HttpError)
    async def _http_error(request, error: HttpError):
        return JSONResponse({"error": {"message": error.message, "type": KINDS.get(error.status, "error"),
                                       "param": error.param}}, status_code=error.status)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        state["requests"] += 1
        if cfg.api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if (given or request.headers.get("x-api-key")) != cfg.api_key:
                return JSONResponse({"error": {"message": "missing or wrong API key (Authorization: Bearer <key>)",
                                               "type": KINDS[401], "param": None}}, status_code=401)
        state["in_flight"] += 1
        try:
            return await call_next(request)
        except FtuneError as error:
            return JSONResponse({"error": {"message": error.one_line(), "type": KINDS[422], "param": error.where}},
                                status_code=422)
        except Exception as error:  # noqa: BLE001 - a bug answers this request, the server goes on
            log.exception("request to %s failed", request.url.path)
            return JSONResponse({"error": {"message": f"{type(error).__name__}: {error}", "type": KINDS[500],
                                           "param": None}}, status_code=500)
        finally:
            state["in_flight"] -= 1

    @app.get("/health")
    async def health():
        return {"status": "ok", "task": inference.task.name}

    @app.get("/info")
    async def info():
        return {**inference.info(), "model_id": model_id, "generative": generative,
                "batching": {"max_batch": inference.batch_size, "window_ms": window * 1000, "passes": batcher.batches},
                "limits": {"max_body_bytes": cfg.max_body_bytes, "max_inputs": cfg.max_inputs,
                           "max_input_chars": cfg.max_input_chars, "max_new_tokens": cfg.max_new_tokens}}

    @app.post("/predict")
    async def predict(request: Request):
        body = await _read_json(request, cfg.max_body_bytes)
        if not isinstance(body, dict) or ("inputs" not in body and "input" not in body):
            raise HttpError(422, 'the body must be {"inputs": [...]} or {"input": ...}', "inputs")
        single = "inputs" not in body
        items = [body["input"]] if single else body["inputs"]
        if not isinstance(items, list) or not items:
            raise HttpError(422, "inputs must be a non-empty list of strings or objects", "inputs")
        if len(items) > cfg.max_inputs:
            raise HttpError(413, f"{len(items)} inputs, the most per request is {cfg.max_inputs}", "inputs")
        for number, item in enumerate(items):
            field = "input" if single else f"inputs[{number}]"
            if not isinstance(item, str | dict):
                raise HttpError(422, f"an input must be a string or an object, got {type(item).__name__}", field)
            if len(item if isinstance(item, str) else json.dumps(item)) > cfg.max_input_chars:
                raise HttpError(413, f"input longer than {cfg.max_input_chars} characters", field)
        rows = await batcher.submit(items)
        return {"prediction": rows[0]} if single else {"predictions": rows}

    if generative:
        from ftune import openai_api

        openai_api.add_routes(app, inference, cfg, batcher, model_id, _read_json, HttpError, StreamingResponse)
    return app


async def _read_json(request, limit: int) -> Any:
    """The body as JSON, refusing more than `limit` bytes (declared or sent) with 413 and bad JSON with 422."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {declared} bytes, the limit is {limit}", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body over {limit} bytes", "body")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HttpError(422, f"the body is not valid JSON: {error}", "body") from error


def _model_id(inference: Any) -> str:
    if inference.settings is not None:
        return f"ftune/{inference.task.name}/{inference.settings.model.get('name', 'model')}"
    return f"ftune/{inference.task.name}/{inference.folder.name}"


class TokenStream:
    """A transformers streamer (put/end) that hands each new token id to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self.loop, self.queue, self.first = loop, queue, True

    def put(self, value) -> None:
        if self.first:  # the prompt (causal LM) or the decoder's start token (seq2seq)
            self.first = False
            return
        for token in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, token)

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


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


def generate(inference: Any, prompt: list[int], settings: Any, min_tokens: int = 0, streamer: Any = None) -> dict:
    """One reply on the model thread: text (as `ftune predict` writes it), token counts, finish reason."""
    import torch

    from ftune.tasks.generation import generate_kwargs

    model, tokenizer = inference.generator(), inference.tokenizer
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    with torch.inference_mode():
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                                streamer=streamer, min_new_tokens=min_tokens or None,
                                **generate_kwargs(settings, tokenizer))
    new = output[0, 0 if model.config.is_encoder_decoder else len(prompt):].tolist()
    ended = tokenizer.eos_token_id in new
    text = tokenizer.decode(new, skip_special_tokens=True).strip()
    return {"text": text, "prompt_tokens": len(prompt), "completion_tokens": len(new),
            "finish_reason": "stop" if ended or len(new) < settings.max_new_tokens else "length",
            "created": int(time.time()), "id": uuid.uuid4().hex[:24]}
