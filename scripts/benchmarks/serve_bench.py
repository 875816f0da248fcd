"""`ftune serve` throughput and latency on MiniLM NER (a run on a CoNLL-2003 slice).

    python scripts/benchmarks/serve_bench.py [--requests 200] [--work runs/serve_bench]

Trains a short MiniLM NER run (throughput does not depend on its F1), exports it to ONNX, then for
runtime torch and onnx, with batching on (batch_window_ms=5) and off (0), starts `ftune serve` on
127.0.0.1 and sends one-sentence /predict requests from 1, 8 and 32 concurrent clients (httpx, loopback):
requests/s, p50 and p95 latency. The baseline is `transformers.pipeline("token-classification")` called in
a loop on the same sentences, one at a time. Writes <work>/serve_bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONLL = REPO.parent / "shared" / "data" / "conll2003"


def sentences(path: Path, limit: int) -> list[str]:
    out, words = [], []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                out.append(" ".join(words))
            words = []
        else:
            words.append(line.split()[0])
    return out[:limit]


def head(source: Path, target: Path, count: int) -> Path:
    blocks = [b for b in source.read_text().split("\n\n") if b.strip() and not b.startswith("-DOCSTART-")]
    target.write_text("\n\n".join(blocks[:count]) + "\n")
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def load(url: str, texts: list[str], clients: int, total: int) -> dict:
    import httpx

    latencies: list[float] = []
    counter = iter(range(total))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for i in counter:
                started = time.perf_counter()
                answer = await http.post("/predict", json={"input": texts[i % len(texts)]})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "requests": total, "requests_per_s": round(total / seconds, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)}


def serve(ftune: str, args: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    process = subprocess.Popen([ftune, "serve", *args, f"port={port}"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement (1 client: a quarter)")
    parser.add_argument("--work", default="runs/serve_bench")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ftune = str(Path(sys.executable).parent / "ftune")
    run = work / "run"
    if not (run / "best").is_dir():
        train = head(CONLL / "train.txt", work / "train.txt", 200)
        validation = head(CONLL / "validation.txt", work / "validation.txt", 200)
        subprocess.run([ftune, "train", "task=ner", "model=minilm", f"task.data.train={train}",
                        f"task.data.validation={validation}", "trainer.max_steps=5", "trainer.batch_size=16",
                        "logger.console=plain", f"run_dir={run}", "overwrite=true"], check=True)
    onnx = work / "onnx"
    if not (onnx / "model.onnx").is_file():
        subprocess.run([ftune, "export", f"run_dir={run}", "format=onnx", f"out={onnx}", "overwrite=true"], check=True)
    texts = sentences(CONLL / "test.txt", 500)
    results = {"cpu_cores": len(os.sched_getaffinity(0)), "load_average_at_start": os.getloadavg()[0], "rows": []}

    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(run / "best"), aggregation_strategy="first", device="cpu")
    tagger(texts[0])
    latencies = []
    for text in texts[: args.requests // 4]:
        started = time.perf_counter()
        tagger(text)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    results["rows"].append({"setup": "transformers.pipeline in a loop", "clients": 1, "requests": len(latencies),
                            "requests_per_s": round(len(latencies) / sum(latencies), 1),
                            "p50_ms": round(1000 * statistics.median(latencies), 1),
                            "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)})
    del tagger
    for runtime, source in (("torch", f"run_dir={run}"), ("onnx", f"model={onnx}")):
        for window in (5, 0):
            process, url = serve(ftune, [source, f"runtime={runtime}", f"batch_window_ms={window}", "batch_size=32"])
            try:
                asyncio.run(load(url, texts, 4, 20))  # warm-up
                for clients in (1, 8, 32):
                    total = args.requests // 4 if clients == 1 else args.requests
                    row = asyncio.run(load(url, texts, clients, total))
                    row["setup"] = f"ftune serve, {runtime}, batching {'on (5 ms)' if window else 'off'}"
                    results["rows"].append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
    results["load_average_at_end"] = os.getloadavg()[0]
    (work / "serve_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| setup | clients | requests/s | p50 ms | p95 ms |\n| --- | ---: | ---: | ---: | ---: |")
    for row in results["rows"]:
        print(f"| {row['setup']} | {row['clients']} | {row['requests_per_s']} | {row['p50_ms']} | {row['p95_ms']} |")


if __name__ == "__main__":
    main()
