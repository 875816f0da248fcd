"""POST /predict: {"inputs": [...]} or {"input": ...}, strings (text lines) or objects (JSON lines), answered
as `ftune predict` would. Each request is checked and featurised here, in its handler (a bad input is refused
with 422 naming it and never joins a batch); the batcher joins the features of concurrent requests into model
passes and hands each request its own predictions, formatted on the model thread."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ftune.inference import as_line
from ftune.serve.http import HttpError, Served, read_json


def router(served: Served) -> APIRouter:
    routes, settings, inference = APIRouter(), served.settings, served.inference
    task = inference.task

    @routes.post("/predict")
    async def predict(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        items, single = inputs_of(body, settings.max_inputs, settings.max_input_chars)
        lines = [as_line(item) for item in items]
        try:
            examples = task.read_inputs(lines)
            features = task.featurize(examples, inference.tokenizer)
        except Exception as error:  # noqa: BLE001 - this request's input, refused before it joins a batch
            raise HttpError(422, f"the input cannot be read: {type(error).__name__}: {error}",
                            "input" if single else "inputs") from error
        for number, (item, line, example) in enumerate(zip(items, lines, examples, strict=True)):
            if isinstance(item, dict) and line in example.values():  # the task read the object as plain text
                raise HttpError(422, f"an object input needs this task's fields (like `ftune predict`'s JSON "
                                f"lines); got keys {sorted(item)}", "input" if single else f"inputs[{number}]")
        if not features:
            rows = task.format_predictions([], features, examples)
        else:
            rows = await served.batcher.submit(
                features, lambda predictions: task.format_predictions(predictions, features, examples))
        # JSONResponse as is: the rows are JSON-ready, FastAPI's encoder pass over them is skipped
        return JSONResponse({"prediction": rows[0]} if single else {"predictions": rows})

    return routes


def inputs_of(body: Any, max_inputs: int, max_chars: int) -> tuple[list, bool]:
    """The request's inputs and whether it sent one (`input`) or a list (`inputs`); 413/422 naming the field."""
    if not isinstance(body, dict) or ("inputs" in body) == ("input" in body):
        raise HttpError(422, 'the body must be {"inputs": [...]} or {"input": ...} (one of them)',
                        "input" if isinstance(body, dict) and "input" in body else "inputs")
    single = "inputs" not in body
    items = [body["input"]] if single else body["inputs"]
    if not isinstance(items, list) or not items:
        raise HttpError(422, "inputs must be a non-empty list of strings or objects", "inputs")
    if len(items) > max_inputs:
        raise HttpError(413, f"{len(items)} inputs, the most per request is {max_inputs}", "inputs")
    for number, item in enumerate(items):
        field = "input" if single else f"inputs[{number}]"
        if not isinstance(item, str | dict):
            raise HttpError(422, f"an input must be a string or an object, got {type(item).__name__}", field)
        if len(item if isinstance(item, str) else json.dumps(item)) > max_chars:
            raise HttpError(413, f"input longer than {max_chars} characters", field)
    return items, single
