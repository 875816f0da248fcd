"""POST /v1/embeddings (OpenAI's shape) for encoder runs on the torch runtime: the mean of the encoder's last
hidden states over each input's tokens (attention mask), as sentence-transformers' mean pooling computes it;
`encoding_format` float (a list) or base64 (little-endian float32, as OpenAI's client decodes it). Each input
runs alone (no padding), so its vector does not depend on the other inputs of the request. Runs that generate
or the ONNX runtime (its graph returns only the head's output) answer 404 in OpenAI's error shape.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import Request

from ftune.serve.http import HttpError, Served, read_json


def add_route(routes: Any, served: Served) -> None:
    inference, settings = served.inference, served.settings
    why_not = ("this run generates text; embeddings come from encoder runs" if inference.generative else
               "the ONNX runtime has no hidden states; serve the run with runtime=torch for embeddings"
               if inference.runtime != "torch" else None)

    @routes.post("/v1/embeddings")
    async def create_embeddings(request: Request):
        if why_not:
            raise HttpError(404, f"/v1/embeddings is not served: {why_not}", None, "not_found")
        body = await read_json(request, settings.max_body_bytes, status=400)
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object", "body")
        if body.get("model") not in (None, served.model_id):
            raise HttpError(404, f"the model `{body.get('model')}` does not exist; this server serves "
                            f"`{served.model_id}`", "model", "model_not_found")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise HttpError(400, "input must be a non-empty string or a list of non-empty strings", "input")
        if len(texts) > settings.max_inputs:
            raise HttpError(413, f"{len(texts)} inputs, the most per request is {settings.max_inputs}", "input")
        if any(len(t) > settings.max_input_chars for t in texts):
            raise HttpError(413, f"an input is longer than {settings.max_input_chars} characters", "input")
        form = body.get("encoding_format") or "float"
        if form not in ("float", "base64"):
            raise HttpError(400, "encoding_format must be float or base64", "encoding_format")
        if body.get("dimensions") is not None:
            raise HttpError(400, "dimensions is not supported: the vectors have the model's hidden size",
                            "dimensions", "unsupported_parameter")
        limit = inference.task.cfg.get("max_length") or 512
        encoded = [inference.tokenizer(t, truncation=True, max_length=limit)["input_ids"] for t in texts]
        vectors = await served.batcher.call(mean_pooled, inference, encoded)
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if form == "base64" else v.tolist()}
                for i, v in enumerate(vectors)]
        tokens = sum(len(ids) for ids in encoded)
        return {"object": "list", "data": data, "model": served.model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def mean_pooled(inference: Any, encoded: list[list[int]]) -> list:
    """On the model thread: one fp32 numpy vector per input, each input in its own pass."""
    import torch

    model = inference.engine.accelerator.unwrap_model(inference.engine.model).eval()
    device = next(model.parameters()).device
    vectors = []
    with torch.inference_mode():
        for ids in encoded:
            tensor = torch.tensor([ids], device=device)
            hidden = model(input_ids=tensor, attention_mask=torch.ones_like(tensor),
                           output_hidden_states=True).hidden_states[-1]
            vectors.append(hidden[0].float().mean(0).cpu().numpy())
    return vectors
