"""The HTTP app of `ftune serve` (FastAPI), over one loaded `Inference`.

One worker thread owns the model (batcher.py). Every error, whatever raised it (a route, FastAPI's routing:
unknown route 404, wrong method 405, or a bug), is JSON in OpenAI's shape `{"error": {"message", "type",
"param", "code"}}`: 401 (API key), 413 (body, inputs or input length over the limits), 422 on /predict and
400 on /v1/* (malformed input, naming the field: OpenAI's clients raise BadRequestError on 400), 503 with
Retry-After when the model's queue is full; an unexpected failure is a 500 for that request only and the
server goes on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ftune.errors import FtuneError
from ftune.serve.batcher import Batcher, QueueFull
from ftune.serve.http import HttpError, Served, ServeSettings, error_body, ftune_error_body, model_id

log = logging.getLogger("ftune")
RETRY_AFTER_S = 1


def create_app(inference: Any, settings: ServeSettings):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from ftune.serve import explain, openai, predict

    generative = inference.generative
    window = 0.0 if generative else settings.batch_window_ms / 1000

    def model_pass(features: list[dict]) -> list:  # one pass of same-length features (no padding)
        return inference.engine.infer(features, len(features))[0]

    batcher = Batcher(model_pass, inference.batch_size, window, settings.max_queue, settings.model_threads(),
                      inference.generate_batch if generative else None, settings.generation_batch)
    served = Served(inference, settings, batcher, model_id(inference))
    state = {"requests": 0, "in_flight": 0}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        log.info("serving %s (task %s, %s, %d model threads) on http://%s:%d", inference.folder,
                 inference.task.name, inference.runtime, settings.model_threads(), settings.host, settings.port)
        yield
        await batcher.stop()

    app = FastAPI(title="ftune serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    def error(request, status: int, message: str, param: str | None = None, code: str | None = None,
              headers: dict | None = None):
        if status == 422 and request.url.path.startswith("/v1/"):
            status = 400  # OpenAI's status for a malformed request
        return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)

    @app.exception_handler(HttpError)
    async def _http_error(request, raised: HttpError):
        return error(request, raised.status, raised.message, raised.param, raised.code, raised.headers)

    @app.exception_handler(QueueFull)
    async def _queue_full(request, raised: QueueFull):
        return error(request, 503, f"the server is busy: {raised}; retry in {RETRY_AFTER_S} s", None, "queue_full",
                     {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(HTTPException)
    async def _routing(request, raised: HTTPException):  # unknown route (404), wrong method (405)
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(raised.status_code,
                                                                                       str(raised.detail))
        return error(request, raised.status_code, message, None, None, getattr(raised, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, raised: RequestValidationError):
        first = raised.errors()[0] if raised.errors() else {}
        return error(request, 422, str(first.get("msg", "invalid request")),
                     ".".join(str(p) for p in first.get("loc", ())[1:]) or None)

    @app.exception_handler(FtuneError)
    async def _ftune_error(request, raised: FtuneError):
        body = ftune_error_body(raised)["error"]
        return error(request, 422, body["message"], body["param"])

    def guard(inner):
        """Outermost (pure ASGI, no per-request task): API key, counters, and a bug → this request's 500."""

        async def app_with_guard(scope, receive, send):
            if scope["type"] != "http":
                return await inner(scope, receive, send)
            state["requests"] += 1
            if settings.api_key and scope["path"] != "/health":
                headers = dict(scope["headers"])
                given = headers.get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ").strip()
                if (given or headers.get(b"x-api-key", b"").decode("latin-1")) != settings.api_key:
                    return await _send(send, 401, error_body(401, "missing or wrong API key "
                                                             "(Authorization: Bearer <key>)", None))
            started = []

            async def tracked(message):
                if message["type"] == "http.response.start":
                    started.append(True)
                await send(message)

            state["in_flight"] += 1
            try:
                await inner(scope, receive, tracked)
            except Exception as failure:  # noqa: BLE001 - a bug answers this request, the server goes on
                log.exception("request to %s failed", scope["path"])
                if not started:
                    await _send(send, 500, error_body(500, f"{type(failure).__name__}: {failure}", None))
            finally:
                state["in_flight"] -= 1

        return app_with_guard

    @app.get("/health")
    async def health():
        return {"status": "ok", "task": inference.task.name}

    @app.get("/info")
    async def info():
        return {**inference.info(), "model_id": served.model_id, "generative": generative,
                "batching": {"max_batch": inference.batch_size, "window_ms": window * 1000, "passes": batcher.batches,
                             "retried_passes": batcher.retries, "max_queue": settings.max_queue,
                             "queued": batcher.queued, "model_threads": settings.model_threads(),
                             "generation_batch": settings.generation_batch, "reply_batches": batcher.reply_batches,
                             "replies_waiting": len(batcher.replies), "replies_joined": batcher.joined,
                             "largest_reply_batch": batcher.largest_reply_batch},
                "limits": {"max_body_bytes": settings.max_body_bytes, "max_inputs": settings.max_inputs,
                           "max_input_chars": settings.max_input_chars, "max_new_tokens": settings.max_new_tokens}}

    app.include_router(predict.router(served))
    app.include_router(explain.router(served))  # POST /explain (ftune/serve/explain.py)
    app.include_router(openai.router(served))  # /v1/models for every run; chat and completions when it generates
    app.add_middleware(_Wrap, wrap=guard)
    return app


class _Wrap:
    """Starlette builds middleware from a class: this one applies `wrap` to the app inside it."""

    def __init__(self, app, wrap):
        self.app = wrap(app)

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


async def _send(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
