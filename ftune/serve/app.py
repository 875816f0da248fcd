"""The HTTP app of `ftune serve` (FastAPI), over one loaded `Inference`.

One worker thread owns the model (batcher.py). Errors are JSON `{"error": {"message", "type", "param"}}`
(OpenAI's shape) with 401 (API key), 413 (body, inputs or input length over the limits), 422 (malformed
input, naming the field); an unexpected failure is a 500 for that request only and the server goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request  # the serve command checks first that the serve extra is installed

from ftune.errors import FtuneError
from ftune.serve.batcher import Batcher
from ftune.serve.http import KINDS, HttpError, Served, ServeSettings, error_body, ftune_error_body, model_id

log = logging.getLogger("ftune")


def create_app(inference: Any, settings: ServeSettings):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from ftune.serve import explain, openai, predict

    generative = inference.generative
    window = 0.0 if generative else settings.batch_window_ms / 1000
    served = Served(inference, settings, Batcher(inference.predict_json, inference.batch_size, window),
                    model_id(inference))
    batcher = served.batcher
    state = {"requests": 0, "in_flight": 0}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        log.info("serving %s (task %s, %s) on http://%s:%d", inference.folder, inference.task.name,
                 inference.runtime, settings.host, settings.port)
        yield
        await batcher.stop()

    app = FastAPI(title="ftune serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(HttpError)
    async def _http_error(request, error: HttpError):
        return JSONResponse(error_body(error.status, error.message, error.param), status_code=error.status)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        state["requests"] += 1
        if settings.api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if (given or request.headers.get("x-api-key")) != settings.api_key:
                return JSONResponse(error_body(401, "missing or wrong API key (Authorization: Bearer <key>)", None),
                                    status_code=401)
        state["in_flight"] += 1
        try:
            return await call_next(request)
        except FtuneError as error:
            return JSONResponse(ftune_error_body(error), status_code=422)
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
        return {**inference.info(), "model_id": served.model_id, "generative": generative,
                "batching": {"max_batch": inference.batch_size, "window_ms": window * 1000, "passes": batcher.batches},
                "limits": {"max_body_bytes": settings.max_body_bytes, "max_inputs": settings.max_inputs,
                           "max_input_chars": settings.max_input_chars, "max_new_tokens": settings.max_new_tokens}}

    app.include_router(predict.router(served))
    app.include_router(explain.router(served))  # POST /explain (ftune/serve/explain.py)
    if generative:
        app.include_router(openai.router(served))
    return app
