"""POST /explain: {"inputs": [...]} or {"input": ...} as /predict takes them, with optional "method", "target",
"steps" and "baseline"; answered as `ftune explain` prints them, behind the same limits as /predict. An
explanation needs gradients, so it runs on its own thread (one at a time), not in the predict batcher."""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import APIRouter, Request

from ftune.serve.http import HttpError, Served, read_json, unencodable

OPTIONS = ("method", "target", "steps", "baseline")


def router(served: Served) -> APIRouter:
    routes, settings, inference = APIRouter(), served.settings, served.inference
    lock, explainers = threading.Lock(), {}

    def explain(items: list, options: dict) -> list[dict]:
        from ftune.explain.attribution import Explainer, Settings
        from ftune.explain.rows import explain_examples
        from ftune.inference import as_line

        with lock:
            key = json.dumps(options, sort_keys=True)
            if key not in explainers:
                explainers[key] = Explainer(inference, Settings(**options))
            examples = inference.task.read_inputs([as_line(item) for item in items])
            return explain_examples(explainers[key], examples)

    @routes.post("/explain")
    async def explain_route(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        if not isinstance(body, dict) or ("inputs" not in body and "input" not in body):
            raise HttpError(422, 'the body must be {"inputs": [...]} or {"input": ...}', "inputs")
        single = "inputs" not in body
        items = [body["input"]] if single else body["inputs"]
        if not isinstance(items, list) or not items:
            raise HttpError(422, "inputs must be a non-empty list of strings or objects", "inputs")
        if len(items) > settings.max_inputs:
            raise HttpError(413, f"{len(items)} inputs, the most per request is {settings.max_inputs}", "inputs")
        for number, item in enumerate(items):
            field = "input" if single else f"inputs[{number}]"
            if not isinstance(item, str | dict):
                raise HttpError(422, f"an input must be a string or an object, got {type(item).__name__}", field)
            if len(item if isinstance(item, str) else json.dumps(item)) > settings.max_input_chars:
                raise HttpError(413, f"input longer than {settings.max_input_chars} characters", field)
            if (bad := unencodable(item, field)) is not None:  # a lone surrogate: the tokenizer would raise
                raise HttpError(422, "text that is not valid Unicode (a lone surrogate?)", bad)
        options = {k: body[k] for k in OPTIONS if body.get(k) is not None}
        if not isinstance(options.get("steps", 1), int) or not 2 <= options.get("steps", 2) <= 512:
            raise HttpError(422, "steps must be an integer from 2 to 512", "steps")
        rows = await asyncio.to_thread(explain, items, options)
        return {"explanation": rows[0]} if single else {"explanations": rows}

    return routes
