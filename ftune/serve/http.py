"""What the routes share: the server's settings, the error every route raises (and the one JSON shape every
error has), the JSON body reader with its limits, and `Served`, the one object a router is built from (the
Inference, the settings, the model thread)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ftune.errors import FtuneError

# Every error body is OpenAI's {"error": {"message", "type", "param", "code"}}; type by status, as OpenAI's
# client maps them (400 BadRequestError, 404 NotFoundError, ...)
KINDS = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "request_too_large", 422: "invalid_request_error",
         503: "server_overloaded", 500: "server_error"}
CODES = {400: "invalid_value", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
         413: "too_large", 422: "invalid_value", 503: "queue_full", 500: "internal_error"}
MAX_DEPTH = 32  # JSON nesting refused (before parsing) beyond this depth: no request needs more


class HttpError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code, self.headers = code or CODES.get(status), headers


def error_body(status: int, message: str, param: str | None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": KINDS.get(status, "error"), "param": param,
                      "code": code or CODES.get(status)}}


@dataclass(frozen=True)
class ServeSettings:
    """The serve config's keys the app reads (configs/serve.yaml): where it listens, the API key, batching,
    the bounded queue and the per-request limits (larger requests get 413)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    batch_window_ms: float = 5.0
    max_body_bytes: int = 1_000_000
    max_inputs: int = 256
    max_input_chars: int = 100_000
    max_new_tokens: int = 512
    generation_batch: int = 16  # generative runs: the most replies decoded together (one static batch)
    max_queue: int = 1024  # inputs waiting for the model; beyond it requests get 503 with Retry-After
    threads: int | None = None  # torch's threads for the model; default: the cores less one (HTTP keeps one)
    workers: int = 1  # server processes, each with its own model; the default threads are divided among them

    def model_threads(self) -> int:
        import os

        return self.threads or max(1, (len(os.sched_getaffinity(0)) - 1) // self.workers)

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


async def read_json(request, limit: int, status: int = 422) -> Any:
    """The body as JSON: over `limit` bytes (declared or sent) 413; nested deeper than MAX_DEPTH, invalid JSON
    or a string that is not valid Unicode (a lone surrogate) `status` (422 on /predict, 400 on /v1)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {declared} bytes, the limit is {limit}", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body over {limit} bytes", "body")
        chunks.append(chunk)
    raw = b"".join(chunks) or b"null"
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting(raw) > MAX_DEPTH:
        raise HttpError(status, f"the body is nested more than {MAX_DEPTH} levels deep", "body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HttpError(status, f"the body is not valid JSON: {error}", "body") from error
    bad = unencodable(body, "")
    if bad is not None:
        raise HttpError(status, f"{bad or 'the body'} is not valid Unicode text (a lone surrogate escape such as "
                        "\\ud800)", bad or "body")
    return body


def nesting(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in a JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def unencodable(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) that cannot be encoded as UTF-8, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, list):
        for number, item in enumerate(value):
            found = unencodable(item, f"{path}[{number}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if unencodable(key, where) is not None:
                return where
            found = unencodable(item, where)
            if found is not None:
                return found
    return None


def model_id(inference: Any) -> str:
    if inference.settings is not None:
        return f"ftune/{inference.task.name}/{inference.settings.model.get('name', 'model')}"
    return f"ftune/{inference.task.name}/{inference.folder.name}"


def ftune_error_body(error: FtuneError, status: int = 422) -> dict:
    return error_body(status, error.one_line(), error.where)
