"""ftune/serve in process (FastAPI's TestClient, no subprocess): the app is built from one Inference and a
ServeSettings, its OpenAI routes answer with Inference.generate's text, and the package imports downwards."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

CHAT = [{"role": "user", "content": "what colour is the sky ?"}]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from ftune.inference import Inference
    from ftune.registry import defaults

    task = OmegaConf.merge(defaults("task", "sft"), {"max_length": 64, "generation": {"max_new_tokens": 4}})
    return Inference.load(OmegaConf.create({"model_dir": str(tiny_llama_dir), "task": task, "device": "cpu",
                                            "precision": "fp32"}))


@pytest.fixture(scope="module")
def client(llama):
    from fastapi.testclient import TestClient

    from ftune.serve.app import create_app
    from ftune.serve.http import ServeSettings

    settings = ServeSettings.from_cfg({"port": 1, "max_new_tokens": 8, "max_input_chars": 2000, "api_key": None})
    with TestClient(create_app(llama, settings)) as test_client:
        yield test_client


def test_settings_come_from_the_serve_config():
    from ftune.serve.http import ServeSettings

    settings = ServeSettings.from_cfg(OmegaConf.create({"host": "0.0.0.0", "max_inputs": 3, "api_key": None,
                                                        "run_dir": "ignored"}), api_key="k")
    assert (settings.host, settings.max_inputs, settings.api_key, settings.port) == ("0.0.0.0", 3, "k", 8000)


def test_chat_completion_is_inference_generate(client, llama):
    expected = llama.generate(llama.prompt(CHAT))
    answer = client.post("/v1/chat/completions", json={"messages": CHAT}).json()
    assert answer["choices"][0]["message"]["content"] == expected["text"]
    assert answer["usage"]["completion_tokens"] == expected["completion_tokens"]
    streamed = client.post("/v1/chat/completions", json={"messages": CHAT, "stream": True}).text
    events = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == expected["text"]
    assert events[-1]["choices"][0]["finish_reason"] == expected["finish_reason"]
    assert streamed.rstrip().endswith("data: [DONE]")


def test_a_prompt_over_the_run_limit_is_413_naming_the_field(client):
    long = "the cat sat on the mat " * 40
    for path, body, field in [("/v1/chat/completions", {"messages": [{"role": "user", "content": long}]}, "messages"),
                              ("/v1/completions", {"prompt": long}, "prompt")]:
        answer = client.post(path, json=body)
        assert answer.status_code == 413
        error = answer.json()["error"]
        assert error["param"] == field and error["type"] == "request_too_large"
        assert error["message"].startswith("the prompt is ") and error["message"].endswith("at most 64")


def test_health_info_and_models(client, llama):
    assert client.get("/health").json() == {"status": "ok", "task": "sft"}
    info = client.get("/info").json()
    assert info["generative"] is True and info["limits"]["max_new_tokens"] == 8
    assert client.get("/v1/models").json()["data"][0]["id"] == info["model_id"]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_serve_imports_downwards_only():
    import ftune

    root = Path(ftune.__file__).parent
    for path in (root / "serve").glob("*.py"):  # serve → inference → engine/tasks; never a command or the CLI
        assert not {m for m in _imports(path) if m.startswith(("ftune.commands", "ftune.cli"))}, path
    below = [root / "inference.py", root / "replies.py", root / "loading.py", root / "run_dir.py"]
    for path in below:
        assert not {m for m in _imports(path) if m.startswith("ftune.serve")}, path
    run_dir = {m for m in _imports(root / "run_dir.py") if m.startswith("ftune")}
    assert run_dir <= {"ftune.errors", "ftune.paths"}  # the lowest layer


# ---- the official OpenAI client against the tiny model (in process: TestClient is an httpx.Client) -------------
@pytest.fixture(scope="module")
def openai_client(client):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="unused", http_client=client, max_retries=0)


def test_openai_client_models_chat_stop_and_stream_with_usage(openai_client, client, llama):
    model = openai_client.models.list().data[0].id
    assert openai_client.models.retrieve(model).id == model
    whole = openai_client.chat.completions.create(model=model, messages=CHAT, max_tokens=8)
    text = whole.choices[0].message.content
    assert whole.created > 0 and whole.usage.completion_tokens >= 1 and text
    stop = text[len(text) // 2:][:3]  # a stop string from the middle of the greedy reply
    cut = openai_client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, stop=[stop, "zzzz"])
    assert cut.choices[0].message.content == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"
    chunks = list(openai_client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, stream=True,
                                                        stop=stop, stream_options={"include_usage": True}))
    assert all(c.created > 0 for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == cut.usage.completion_tokens
    assert client.post("/v1/chat/completions", json={"messages": CHAT, "stream": True}).text.rstrip().endswith(
        "data: [DONE]")
    sampled = [openai_client.completions.create(model=model, prompt="the cat", max_tokens=6, temperature=1.0,
                                                seed=7).choices[0].text for _ in range(2)]
    assert sampled[0] == sampled[1]  # the same seed, the same sample


@pytest.mark.parametrize("extra", [{"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
                                   {"response_format": {"type": "json_object"}}, {"logprobs": True}, {"n": 2}])
def test_openai_client_raises_bad_request_for_what_cannot_be_honoured(openai_client, extra):
    import openai

    model = openai_client.models.list().data[0].id
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.chat.completions.create(model=model, messages=CHAT, **extra)
    assert raised.value.status_code == 400 and raised.value.body["param"] == next(iter(extra))
    assert "supported" in raised.value.message


def test_openai_client_raises_not_found_for_another_model(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        openai_client.chat.completions.create(model="gpt-4o", messages=CHAT)
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        openai_client.models.retrieve("gpt-4o")
    with pytest.raises(openai.NotFoundError, match="embeddings"):  # a generating run serves no embeddings
        openai_client.embeddings.create(model="x", input="hi")


def test_stop_strings_are_held_back_across_pieces():
    from ftune.replies import StopWatch

    watch = StopWatch(["END", "\n\n"])
    sent = [watch.feed(piece) for piece in ["the c", "at E", "N", "D more"]]
    assert sent == ["the c", "at ", "", ""] and watch.text == "the cat " and watch.hit == "END"
    other = StopWatch(["END"])
    assert [other.feed(p) for p in ["a E", "x"]] + [other.rest()] == ["a ", "Ex", ""] and other.hit is None


def test_concurrent_chat_requests_are_decoded_together_each_streamed_on_its_own(llama, monkeypatch):
    """While the model thread is busy, five requests queue; they join the running batch: each stream's pieces
    join to its alone-answer, and the one whose prompt fails gets its 500 alone."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from ftune.serve.app import create_app
    from ftune.serve.http import ServeSettings

    batches, gate, generate_batch, prompt = [], threading.Event(), llama.generate_batch, llama.prompt

    def held(requests, more=None, on_done=None):  # the first batch waits to start until the others are queued
        batches.append(len(requests))
        if len(batches) == 1:
            gate.wait(30)
        return generate_batch(requests, more, on_done)

    monkeypatch.setattr(llama, "generate_batch", held, raising=False)
    monkeypatch.setattr(llama, "prompt", lambda conversation, cut=True: [0, 10 ** 6] if conversation[-1][
        "content"] == "BAD" else prompt(conversation, cut), raising=False)  # a token id the model cannot embed
    questions = ["hi", "what colour is the sky ?", "tell me about the cat and the dog", "why ?"]
    settings = ServeSettings.from_cfg({"port": 1, "max_new_tokens": 8, "api_key": None})
    with TestClient(create_app(llama, settings)) as server, ThreadPoolExecutor(6) as pool:
        def ask(question: str, stream: bool):
            body = {"messages": [{"role": "user", "content": question}], "max_tokens": 6, "stream": stream}
            return server.post("/v1/chat/completions", json=body)

        first = pool.submit(ask, "hello", False)
        while not batches:
            time.sleep(0.01)
        answers = [pool.submit(ask, q, n % 2 == 0) for n, q in enumerate(questions)] + [pool.submit(ask, "BAD", False)]
        while server.get("/info").json()["batching"]["replies_waiting"] < len(answers):
            time.sleep(0.01)
        gate.set()
        assert first.result().status_code == 200
        for n, (question, answer) in enumerate(zip(questions, answers, strict=False)):
            alone = llama.generate(prompt([{"role": "user", "content": question}]), OmegaConf.merge(
                llama.task.cfg.generation, {"max_new_tokens": 6}))
            if n % 2 == 0:
                events = [json.loads(line[6:]) for line in answer.result().text.splitlines()
                          if line.startswith("data: {")]
                assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == alone["text"]
                assert events[-1]["choices"][0]["finish_reason"] == alone["finish_reason"]
            else:
                assert answer.result().json()["choices"][0]["message"]["content"] == alone["text"]
        failed = answers[-1].result()
        assert failed.status_code == 500 and "IndexError" in failed.json()["error"]["message"]
        for _ in range(100):  # the batch ends (and is counted) just after its last answer
            batching = server.get("/info").json()["batching"]
            if batching["reply_batches"]:
                break
            time.sleep(0.01)
        assert batches == [1] and batching["replies_joined"] == len(answers) and batching["reply_batches"] == 1
