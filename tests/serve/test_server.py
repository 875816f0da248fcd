"""`ftune serve` as a real uvicorn process on 127.0.0.1 (a free port), driven with httpx; loopback only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import deploy_fixtures as F
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # a real uvicorn server process per task

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
INPUTS = {"ner": ["Angela Merkel visited Paris .", "the cat sat on the mat", "", {"tokens": ["Bob", "ran"]}],
          "classification": ["a great and moving film", "an awful mess", {"text": "nothing works here"}],
          "qa": [{"question": "Who won?", "context": F.QA_CONTEXT}, {"question": "Where?", "context": F.QA_CONTEXT}],
          "sft": ["what colour is the sky ?", {"messages": F.CHAT[:3]}]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, run: Path, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "FTUNE_API_KEY": ""}
        self.process = subprocess.Popen([sys.executable, "-m", "ftune", "serve", f"run_dir={run}", f"port={self.port}",
                                         *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # bounded: the model loads, then the port opens
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.process.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError("server did not answer /health in 180 s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@pytest.fixture(scope="module")
def servers(request):
    """servers(task) → a running server for that task's run (started once per module)."""
    started: dict[str, Server] = {}

    def get(task: str) -> Server:
        if task not in started:
            extra = [f"api_key={KEY}", "max_body_bytes=20000", "max_inputs=50", "max_input_chars=2000"] if task == "ner" else []
            started[task] = Server(request.getfixturevalue(f"{task}_run"), *extra)
        return started[task]

    yield get
    for server in started.values():
        server.stop()


def _ftune_predict(run: Path, items: list, tmp_path: Path) -> list[dict]:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    run_cli("predict", f"run_dir={run}", f"input={source}", f"output={target}")
    return [json.loads(line) for line in target.read_text().splitlines()]


@pytest.mark.parametrize("task", ["ner", "classification", "qa", "sft"])
def test_predict_answers_equal_ftune_predict(task, servers, request, tmp_path):
    server = servers(task)
    expected = _ftune_predict(request.getfixturevalue(f"{task}_run"), INPUTS[task], tmp_path)
    answer = httpx.post(f"{server.url}/predict", json={"inputs": INPUTS[task]}, headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected
    one = httpx.post(f"{server.url}/predict", json={"input": INPUTS[task][0]}, headers=AUTH, timeout=60)
    assert one.json()["prediction"] == expected[0]
    info = httpx.get(f"{server.url}/info", headers=AUTH).json()
    assert info["task"] == ("ner" if task == "ner" else task) and info["max_length"] and "versions" in info


def test_key_limits_and_malformed_input_then_still_serving(servers):
    server = servers("ner")
    url = f"{server.url}/predict"
    assert httpx.get(f"{server.url}/health").status_code == 200  # no key needed to probe
    denied = httpx.post(url, json={"inputs": ["hi"]})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    assert httpx.post(url, json={"inputs": ["hi"]}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    cases = [
        (413, "body", {"content": json.dumps({"inputs": ["word " * 5000]})}),  # over max_body_bytes
        (413, "inputs", {"json": {"inputs": ["a"] * 51}}),  # over max_inputs
        (413, "inputs[1]", {"json": {"inputs": ["a", "b" * 2001]}}),  # over max_input_chars
        (422, "body", {"content": b'{"inputs": ["unclosed"'}),
        (422, "inputs", {"json": {"texts": ["a"]}}),
        (422, "inputs", {"json": {"inputs": []}}),
        (422, "inputs[1]", {"json": {"inputs": ["a", 3]}}),
    ]
    for status, field, body in cases:
        answer = httpx.post(url, headers={**AUTH, "Content-Type": "application/json"}, timeout=30, **body)
        assert (answer.status_code, answer.json()["error"]["param"]) == (status, field), answer.text
    assert httpx.post(url, json={"inputs": ["Paris ."]}, headers=AUTH, timeout=30).status_code == 200
    assert server.process.poll() is None


def test_200_concurrent_requests_from_8_clients(servers):
    server = servers("ner")
    texts = [f"Angela Merkel met {name} in Paris ." for name in ("Bob", "Anna", "Emmanuel Macron", "the cat")]
    expected = httpx.post(f"{server.url}/predict", json={"inputs": texts}, headers=AUTH, timeout=60).json()["predictions"]
    passes_before = httpx.get(f"{server.url}/info", headers=AUTH).json()["batching"]["passes"]
    failures: list[str] = []

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http:
            for i in range(25):
                pick = [(number + i) % 4, (number * 3 + i) % 4][: 1 + i % 2]
                answer = http.post("/predict", json={"inputs": [texts[k] for k in pick]})
                if answer.status_code != 200 or answer.json()["predictions"] != [expected[k] for k in pick]:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not failures, failures[:3]
    passes = httpx.get(f"{server.url}/info", headers=AUTH).json()["batching"]["passes"] - passes_before
    assert passes < 200  # concurrent requests shared model passes


def test_200_concurrent_mixed_requests_no_5xx_and_alone_answers(servers):
    """200 requests at once, a third of them malformed (lone surrogate, deep nesting, wrong shapes, both keys):
    no 5xx, every malformed one a 4xx, every valid one exactly its alone-answer."""
    import asyncio

    server = servers("ner")
    texts = ["Angela Merkel visited Paris .", "Bob", "the cat sat on the mat with Emmanuel Macron in Berlin .",
             "Paris .", "", "New York and London"]
    alone = [httpx.post(f"{server.url}/predict", json={"input": t}, headers=AUTH, timeout=60).json()["prediction"]
             for t in texts]
    bad = [b'{"input": "bad \\ud800"}', b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"input": 3}',
           b'{"input": {"txt": "x"}}', b'{"input": "a", "inputs": ["b"]}', b'{"inputs": [["x"]]}', b"[1, 2"]

    async def send(http, number):
        if number % 3 == 2:
            answer = await http.post("/predict", content=bad[number % len(bad)])
            return answer.status_code, None, None
        answer = await http.post("/predict", json={"input": texts[number % len(texts)]})
        return answer.status_code, answer.json().get("prediction"), alone[number % len(texts)]

    async def burst():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, headers={**AUTH, "Content-Type": "application/json"},
                                     timeout=120, limits=limits) as http:
            return await asyncio.gather(*(send(http, n) for n in range(200)))

    results = asyncio.run(burst())
    assert not [r for r in results if r[0] >= 500]
    assert all(400 <= status < 500 for n, (status, _, _) in enumerate(results) if n % 3 == 2)
    valid = [r for n, r in enumerate(results) if n % 3 != 2]
    assert all(status == 200 and got == expected for status, got, expected in valid)
    assert server.process.poll() is None


def _events(response) -> list:
    lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_openai_chat_and_completions_stream_the_same_text(servers):
    server = servers("sft")
    models = httpx.get(f"{server.url}/v1/models").json()
    model = models["data"][0]["id"]
    body = {"model": model, "messages": F.CHAT[:3], "max_tokens": 8}
    whole = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    assert whole["object"] == "chat.completion" and whole["usage"]["completion_tokens"] <= 8
    streamed = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = _events(streamed)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    # the same reply as /predict (and so `ftune predict`) gives for the conversation
    predicted = httpx.post(f"{server.url}/predict", json={"input": {"messages": F.CHAT[:3]}}, timeout=60).json()
    with_run_tokens = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": F.CHAT[:3]}, timeout=60).json()
    assert with_run_tokens["choices"][0]["message"]["content"] == predicted["prediction"]["response"]
    completion = {"prompt": "the cat", "max_tokens": 5}
    plain = httpx.post(f"{server.url}/v1/completions", json=completion, timeout=60).json()
    streamed = _events(httpx.post(f"{server.url}/v1/completions", json={**completion, "stream": True}, timeout=60))
    assert "".join(c["choices"][0]["text"] for c in streamed) == plain["choices"][0]["text"]
    for bad, field in (({"messages": []}, "messages"), ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
                       ({"messages": F.CHAT[:1], "max_tokens": 10**6}, "max_tokens"),
                       ({"messages": [{"role": "user", "content": "the cat " * 3000}]}, "messages")):
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=bad, timeout=30)
        assert answer.status_code in (400, 413) and answer.json()["error"]["param"] == field, answer.text


def test_concurrent_chats_each_get_their_alone_reply(servers):
    """Chat requests sent together (streamed or not, different max_tokens) share batches in the real server
    (in a trial run: 7 of 8 joined a running batch, 5 at once); each gets the reply it gets alone, and each
    stream only its own pieces. That they are batched is asserted in process (test_app.py), not timed here."""
    from concurrent.futures import ThreadPoolExecutor

    server = servers("sft")
    questions = ["what colour is the sky ?", "hi", "tell me about the cat and the dog please", "why ?"] * 2
    bodies = [{"messages": [{"role": "user", "content": q}], "max_tokens": 4 + n % 5, "stream": n % 2 == 1}
              for n, q in enumerate(questions)]

    def text(body: dict) -> str:
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        if body["stream"]:
            return "".join(c["choices"][0]["delta"].get("content", "") for c in _events(answer))
        return answer.json()["choices"][0]["message"]["content"]

    alone = [text(body) for body in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        assert list(pool.map(text, bodies)) == alone


def test_sigterm_finishes_in_flight_requests(servers):
    """SIGTERM while a reply is streaming: the reply is finished (every token, then [DONE]) and the server
    exits 0. The signal is sent once the first token has arrived, so the request is in flight whatever the
    machine's speed."""
    server = servers("sft")
    body = {"messages": F.CHAT[:1], "max_tokens": 160, "min_tokens": 160, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as answer:
        lines = answer.iter_lines()
        before = []
        for line in lines:
            if line.startswith("data: "):
                before.append(line)
                if '"content"' in line:  # the first generated token: the request is being answered
                    break
        server.process.send_signal(signal.SIGTERM)
        after = [line for line in lines if line.startswith("data: ")]
    assert after and after[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in before + after[:-1]]
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) >= 100  # the whole reply, not a cut
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert server.process.wait(60) == 0


def test_two_worker_processes_answer_as_one_and_stop_together(ner_run, servers):
    """workers=2: two processes behind one port, answering what the one-process server answers; SIGTERM stops
    both, exit 0."""
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    alone = servers("ner")
    server = Server(ner_run, "workers=2")
    try:
        workers = psutil.Process(server.process.pid).children(recursive=True)
        spawned = [w for w in workers if "spawn_main" in " ".join(w.cmdline())]
        assert len(spawned) == 2, [w.cmdline() for w in workers]
        inputs = INPUTS["ner"][:2] * 20

        def answer(url: str, text) -> dict:
            reply = httpx.post(f"{url}/predict", json={"input": text}, headers=AUTH, timeout=60)
            assert reply.status_code == 200, reply.text
            return reply.json()["prediction"]

        expected = [answer(alone.url, text) for text in inputs[:2]]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda text: answer(server.url, text), inputs))
        assert got == expected * 20
    finally:
        assert server.stop() == 0
    assert not any(w.is_running() for w in spawned)  # the parent joins its workers before it exits
    # its other children (multiprocessing's resource tracker) end when they see the parent gone, not before it
    assert not psutil.wait_procs(workers, timeout=15)[1]
    # a worker that dies takes the others down (exit 1): tests/serve/test_workers.py, with stand-in workers
