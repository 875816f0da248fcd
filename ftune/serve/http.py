"""What the routes share: the server's settings, the error every route raises, the JSON body reader, and
`Served`, the one object a router is built from (the Inference, the settings, the model thread)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ftune.errors import FtuneError

# OpenAI's error types, by status; every error body is {"error": {"message", "type", "param"}}
KINDS = {401: "authentication_error", 413: "request_too_large", 422: "invalid_request_error", 500: "server_error"}


class HttpError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def error_body(status: int, message: str, param: str | None) -> dict:
    return {"error": {"message": message, "type": KINDS.get(status, "error"), "param": param}}


@dataclass(frozen=True)
class ServeSettings:
    """The serve config's keys the app reads (configs/serve.yaml): where it listens, the API key, batching and
    the per-request limits (larger requests get 413)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    batch_window_ms: float = 5.0
    max_body_bytes: int = 1_000_000
    max_inputs: int = 256
    max_input_chars: int = 100_000
    max_new_tokens: int = 512

    @classmethod
    def from_cfg(cls, cfg: Any, **changes: Any) -> ServeSettings:
        """From `ftune serve`'s config (a DictConfig or a dict); `changes` win (the API key from the env)."""
        from dataclasses import fields

        values = {f.name: cfg.get(f.name) for f in fields(cls) if cfg.get(f.name) is not None}
        return cls(**{**values, **changes})


@dataclass
class Served:
    """What a router needs: the loaded model, the settings, the model thread and the model's public id."""

    inference: Any  # ftune.inference.Inference
    settings: ServeSettings
    batcher: Any  # ftune.serve.batcher.Batcher
    model_id: str


async def read_json(request, limit: int) -> Any:
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


def model_id(inference: Any) -> str:
    if inference.settings is not None:
        return f"ftune/{inference.task.name}/{inference.settings.model.get('name', 'model')}"
    return f"ftune/{inference.task.name}/{inference.folder.name}"


def ftune_error_body(error: FtuneError) -> dict:
    return error_body(422, error.one_line(), error.where)
