"""POST /predict: {"inputs": [...]} or {"input": ...}, strings (text lines) or objects (JSON lines), answered
as `ftune predict` would; concurrent requests are joined into model passes by the batcher."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from ftune.serve.http import HttpError, Served, read_json


def router(served: Served) -> APIRouter:
    routes, settings = APIRouter(), served.settings

    @routes.post("/predict")
    async def predict(request: Request):
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
        rows = await served.batcher.submit(items)
        return {"prediction": rows[0]} if single else {"predictions": rows}

    return routes
