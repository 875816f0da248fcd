"""`ftune serve` under concurrency, in process (httpx's ASGI transport, no socket): answers do not depend on
their neighbours (bit-identical alone and batched), a bad input fails alone, every error is JSON in one shape,
a full queue answers 503 with Retry-After."""

from __future__ import annotations

import asyncio
import json

import pytest
from omegaconf import OmegaConf

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

# mixed lengths, repeated lengths (they share passes), an empty text and pre-split tokens
TEXTS = ["Angela Merkel visited Paris .", "the cat sat on the mat", "Bob", "Emmanuel Macron met Angela Merkel in "
         "Berlin on Monday to talk about the weather and the cat .", "the dog sat on the mat", "",
         {"tokens": ["Bob", "ran", "to", "Paris"]}, "Paris ."]


@pytest.fixture(scope="module")
def ner(ner_run):
    from ftune.inference import Inference

    # fp32: where padding changes the tiny model's outputs in the last bits (its bf16 rounding hides them)
    return Inference.load(OmegaConf.create({"run_dir": str(ner_run), "device": "cpu", "precision": "fp32"}))


def _app(inference, **changes):
    from ftune.serve.app import create_app
    from ftune.serve.http import ServeSettings

    return create_app(inference, ServeSettings.from_cfg({"port": 1, **changes}))


async def _with_client(app, work):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await work(client)


def _run(app, work):
    return asyncio.run(_with_client(app, work))


def test_answers_are_bit_identical_alone_and_in_any_batch(ner, monkeypatch):
    _check_invariance(ner, monkeypatch)


@pytest.mark.slow  # exports the run to ONNX first
def test_onnx_answers_are_bit_identical_alone_and_in_any_batch(ner_run, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from ftune.inference import Inference
    from tests.conftest import run_cli

    run_cli("export", f"run_dir={ner_run}", "format=onnx", f"out={tmp_path / 'onnx'}")
    onnx = Inference.load(OmegaConf.create({"model_dir": str(tmp_path / "onnx"), "device": "cpu", "runtime": "onnx"}))
    _check_invariance(onnx, monkeypatch)


def _check_invariance(ner, monkeypatch):
    app = _app(ner, batch_window_ms=20)
    raw: dict[tuple, list] = {}  # the model's unrounded per-word confidences, by input ids
    real = ner.engine.infer

    def infer(features, batch_size):
        predictions = real(features, batch_size)
        for feature, prediction in zip(features, predictions[0], strict=True):
            raw.setdefault(tuple(feature["input_ids"]), []).append(prediction)
        return predictions

    monkeypatch.setattr(ner.engine, "infer", infer)

    async def work(client):
        alone = [(await client.post("/predict", json={"input": t})).json()["prediction"] for t in TEXTS]
        passes = (await client.get("/info")).json()["batching"]["passes"]
        together = await asyncio.gather(*(client.post("/predict", json={"input": t}) for t in TEXTS * 3))
        info = (await client.get("/info")).json()["batching"]
        one_request = (await client.post("/predict", json={"inputs": TEXTS})).json()["predictions"]
        return alone, [r.json()["prediction"] for r in together], info["passes"] - passes, one_request

    alone, together, passes, one_request = _run(app, work)
    assert together == alone * 3  # scores included, to the last digit
    assert all(len(seen) == 5 and all(p == seen[0] for p in seen) for seen in raw.values())  # unrounded too
    assert one_request == alone
    assert passes < len(TEXTS) * 3  # requests shared passes (same lengths together)


def test_a_bad_input_in_a_batch_fails_alone(ner, monkeypatch):
    app = _app(ner, batch_window_ms=20)
    poison = "the poisoned sentence"
    real = ner.engine.infer

    def infer(features, batch_size):  # a model pass that fails whenever the poisoned input is in it
        if any(f["input_ids"] == poison_ids for f in features):
            raise RuntimeError("boom")
        return real(features, batch_size)

    poison_ids = ner.task.featurize(ner.task.read_inputs([poison]), ner.tokenizer)[0]["input_ids"]
    monkeypatch.setattr(ner.engine, "infer", infer)

    async def work(client):
        alone = [(await client.post("/predict", json={"input": t})).json()["prediction"] for t in TEXTS]
        bodies = [{"input": t} for t in TEXTS] + [{"input": poison}, {"input": "bad \ud800"},
                                                  {"input": {"txt": "fine"}}, {"input": 3}]
        answers = await asyncio.gather(*(client.post("/predict", content=json.dumps(b)) for b in bodies * 2))
        return alone, answers

    alone, answers = _run(app, work)
    good, bad = answers[:len(TEXTS)] + answers[len(TEXTS) + 4:2 * len(TEXTS) + 4], \
        answers[len(TEXTS):len(TEXTS) + 4] + answers[2 * len(TEXTS) + 4:]
    assert [a.status_code for a in good] == [200] * 2 * len(TEXTS)
    assert [a.json()["prediction"] for a in good] == alone * 2
    assert [a.status_code for a in bad] == [500, 422, 422, 422] * 2
    assert bad[1].json()["error"]["param"] == "input" and "surrogate" in bad[1].json()["error"]["message"]
    assert "keys ['txt']" in bad[2].json()["error"]["message"]


def test_malformed_bodies_are_4xx_in_one_json_shape(ner):
    app = _app(ner)
    deep = b'{"input": ' + b"[" * 20000 + b"]" * 20000 + b"}"

    async def work(client):
        return [await client.post("/predict", content=deep),
                await client.post("/predict", json={"input": "a", "inputs": ["b"]}),
                await client.post("/predict", json={"inputs": [["nested"]]}),
                await client.post("/predict", content=b'{"input": "bad \\udc00 end"}'),
                await client.get("/no/such/route"), await client.get("/predict"),
                await client.post("/v1/chat/completions", json={"messages": []}),
                await client.post("/v1/embeddings", content=b'{"input": "bad \\ud800"}')]

    answers = _run(app, work)
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 404, 405, 404, 400]
    for answer in answers:
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], answer.text
    assert "nested more than" in answers[0].json()["error"]["message"]
    assert answers[5].headers["allow"] == "POST"


def test_a_full_queue_answers_503_with_retry_after(ner):
    app = _app(ner, max_queue=2)

    async def work(client):
        return await asyncio.gather(*(client.post("/predict", json={"inputs": TEXTS[:2]}) for _ in range(6)))

    answers = _run(app, work)
    statuses = sorted(a.status_code for a in answers)
    assert 200 in statuses and 503 in statuses and set(statuses) == {200, 503}, statuses
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "queue_full"


def test_embeddings_are_mean_pooled_float_and_base64(ner):
    import base64

    import numpy as np

    app = _app(ner)

    async def work(client):
        floats = await client.post("/v1/embeddings", json={"input": ["the cat", "Paris is big ."]})
        packed = await client.post("/v1/embeddings", json={"input": "the cat", "encoding_format": "base64"})
        other = await client.post("/v1/embeddings", json={"input": "x", "model": "gpt-4o"})
        return floats.json(), packed.json(), other

    floats, packed, other = _run(app, work)
    first = np.array(floats["data"][0]["embedding"], dtype=np.float32)
    assert first.shape == (32,) and floats["usage"]["prompt_tokens"] > 0
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, first)  # alone or with another input: the same vector
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
