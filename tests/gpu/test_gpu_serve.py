"""`ftune serve` on CUDA: the answers to requests sent one at a time equal those to the same requests batched
(one request with every input: one batched pass; and concurrent requests, which the server joins into shared
passes for encoder tasks and answers one by one for generative runs)."""

from __future__ import annotations

import json
import threading

import pytest

from tests.conftest import run_cli
from tests.gpu.conftest import CHAT, source_env

pytestmark = pytest.mark.gpu
# ner: two inputs of the same token length (serve joins only equal lengths into a pass, without padding)
INPUTS = {"ner": ["Angela Merkel visited Paris .", "the cat sat on the mat", "Bob ran to Berlin with Anna .",
                  "the dog sat on the rug"],
          "sft": ["what colour is the sky ?", "hello", {"messages": CHAT[:3]}, "the cat"]}


def _close(a, b, path="") -> None:
    """Equal strings, labels and structure; numbers (scores) within 2e-3: batch padding changes the sums."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=2e-3), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize(("task", "precision"), [("ner", "bf16"), ("sft", "fp32")])
def test_serve_on_cuda_answers_alone_and_batched_alike(task, precision, ner_overrides, sft_overrides, tmp_path,
                                                       monkeypatch):
    """NER in bf16 (the GPU default); sft greedy generation in fp32, where only a real batching bug (padding,
    positions, a cache shared between rows) can change a token."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from tests.serve.test_server import Server

    overrides = ner_overrides if task == "ner" else sft_overrides
    run = tmp_path / "run"
    run_cli("train", *overrides, f"trainer.precision={precision}", f"run_dir={run}")
    for key, value in source_env().items():  # Server starts `python -m ftune serve` with os.environ
        monkeypatch.setenv(key, value)
    server = Server(run, "device=cuda", "batch_window_ms=500")  # wide: the concurrent requests surely meet
    try:
        info = httpx.get(f"{server.url}/info", timeout=30).json()
        assert info["precision"] == precision
        alone = []
        for item in INPUTS[task]:
            answer = httpx.post(f"{server.url}/predict", json={"input": item}, timeout=120)
            assert answer.status_code == 200, answer.text
            alone.append(answer.json()["prediction"])
        together = httpx.post(f"{server.url}/predict", json={"inputs": INPUTS[task]}, timeout=120).json()["predictions"]
        _close(together, alone)
        concurrent: list = [None] * len(INPUTS[task])
        start = threading.Barrier(len(INPUTS[task]))
        passes = httpx.get(f"{server.url}/info").json()["batching"]["passes"]

        def ask(i: int) -> None:
            with httpx.Client(timeout=120) as client:
                start.wait(60)
                concurrent[i] = client.post(f"{server.url}/predict", json={"input": INPUTS[task][i]}).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(INPUTS[task]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        _close([c["prediction"] for c in concurrent], alone)
        shared = httpx.get(f"{server.url}/info").json()["batching"]["passes"] - passes
        if info["batching"]["window_ms"] > 0:  # encoder tasks join concurrent requests into shared passes
            assert shared < len(INPUTS[task])
        else:  # generative runs take concurrent requests one by one (ftune/serving.py); a list is one batch
            assert shared == len(INPUTS[task])
        print(json.dumps({"task": task, "passes_for_batched": shared}))
    finally:
        assert server.stop() == 0
