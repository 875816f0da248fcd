"""PEFT and freezing methods against full fine-tuning: MiniLM on the first 2,000 CoNLL-2003 sentences.

Each method trains through `ftune train` (3 epochs, batch 32, validation on the first 1,000 validation
sentences); the table gives trainable parameters, the size of a checkpoint (everything a resume needs:
weights that train, optimizer state, tokenizer) and of best/'s weights, validation F1 and training speed.

    python scripts/peft_table.py [--only lora,full] [--out docs/peft.latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONLL = REPO.parent / "shared" / "data" / "conll2003"

# method → overrides; learning rates: PEFT methods train few weights and need larger steps (each was
# picked from a short sweep on this slice, see docs/peft.md)
METHODS = {
    "full": ["optimizer.lr=1e-4"],
    "lora": ["peft=lora", "optimizer.lr=3e-3"],
    "lora all-linear r=16": ["peft=lora", "peft.target_modules=all-linear", "peft.r=16", "peft.alpha=32",
                             "optimizer.lr=1e-3"],
    "adalora": ["peft=adalora", "optimizer.lr=3e-3"],
    "ia3": ["peft=ia3", "optimizer.lr=1e-2"],
    "prefix_tuning": ["peft=prefix_tuning", "optimizer.lr=1e-2"],
    "prompt_tuning": ["peft=prompt_tuning", "optimizer.lr=3e-2"],
    "freeze head_only": ["freeze=head_only", "optimizer.lr=1e-2"],
    "freeze bitfit": ["freeze=bitfit", "optimizer.lr=1e-3"],
    "freeze bottom_layers=3": ["freeze=bottom_layers", "freeze.bottom_layers=3", "optimizer.lr=1e-4"],
}


def folder_mb(folder: Path, pattern: str = "*") -> float:
    return sum(f.stat().st_size for f in folder.glob(pattern) if f.is_file()) / 2**20


def run(name: str, overrides: list[str], root: Path) -> dict:
    run_dir = root / name.replace(" ", "_").replace("=", "")
    command = [sys.executable, "-m", "ftune", "train", "task=ner", "model=minilm",
               f"task.data.train={CONLL / 'train.txt'}", f"task.data.validation={CONLL / 'validation.txt'}",
               "task.data.max_train=2000", "task.data.max_validation=1000", "trainer.epochs=3",
               "trainer.batch_size=32", "trainer.keep_last=1", "logger.console=none", f"run_dir={run_dir}",
               "overwrite=true", *overrides]
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    results = json.loads((run_dir / "results.json").read_text())
    checkpoint = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()
    return {"method": name, "overrides": " ".join(overrides), "trainable": results["parameters"]["trainable"],
            "total": results["parameters"]["total"], "trainable_percent": results["parameters"]["percent"],
            "checkpoint_mb": round(folder_mb(checkpoint), 2), "best_weights_mb": results["best_mb"],
            "val_f1": round(results["validation"]["f1"], 4), "samples_per_s": results["train"]["samples_per_s"],
            "wall_seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated method names (default: all)")
    parser.add_argument("--root", default="runs/peft_table")
    parser.add_argument("--out", default=str(REPO / "docs" / "peft.latest.json"))
    args = parser.parse_args()
    if not (CONLL / "train.txt").exists():
        sys.exit(f"CoNLL-2003 not found at {CONLL} (the ../shared checkout beside the repo)")
    chosen = args.only.split(",") if args.only else list(METHODS)
    rows = []
    for name in chosen:
        rows.append(run(name, METHODS[name], Path(args.root)))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    full = next((r for r in rows if r["method"] == "full"), None)
    print("\n| method | trainable | trainable % | checkpoint MB | best/ weights MB | val F1 | samples/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        share = f" ({100 * r['checkpoint_mb'] / full['checkpoint_mb']:.1f}% of full)" if full and r is not full else ""
        print(f"| {r['method']} | {r['trainable']:,} | {r['trainable_percent']:.2f} | {r['checkpoint_mb']:.1f}{share} | "
              f"{r['best_weights_mb']:.2f} | {r['val_f1']:.4f} | {r['samples_per_s']:.0f} |")


if __name__ == "__main__":
    main()
