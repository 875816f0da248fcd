"""Continued pretraining measured: SmolLM2-135M-Instruct's perplexity on SQuAD v1.1 contexts of articles it was not
tuned on, before and after `task=clm` with LoRA on the other articles' contexts (docs/tasks/clm.md).

    python scripts/clm_table.py                                  # 300 steps of 4 x 128 tokens, seeds 1 2 3
    python scripts/clm_table.py --steps 6 --batch 2 --heldout 20 --seeds 1    # the reduced run of the first note

Data: the dev set's paragraphs, one per line with whitespace collapsed; articles 1-40 train, 41-48 held out (the
first --heldout paragraphs of them, all by default). "Before" is `ftune eval task=clm` of the shipped model on the
held-out file; "after" is the held-out validation of `ftune train task=clm peft=lora` (the same blocks: both pack
the file into --max-length blocks with EOS between paragraphs). Every run is an ftune subprocess under --out; a
finished one is reused. Prints a markdown table and writes it with every figure to --out/results.json. Skips
(exit 0) when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "data" / "squad_v1.1" / "dev-v1.1.json"
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


def contexts(out: Path, heldout: int | None) -> tuple[Path, Path]:
    """train.txt (articles 1-40) and heldout.txt (articles 41-48), a paragraph per line."""
    articles = json.loads(SQUAD.read_text())["data"]
    text = [[" ".join(p["context"].split()) for p in a["paragraphs"]] for a in articles]
    train, held = [p for a in text[:40] for p in a], [p for a in text[40:48] for p in a][:heldout]
    (out / "train.txt").write_text("\n".join(train) + "\n")
    (out / "heldout.txt").write_text("\n".join(held) + "\n")
    print(f"{len(train):,} training paragraphs, {len(held):,} held out", file=sys.stderr, flush=True)
    return out / "train.txt", out / "heldout.txt"


def ftune(command: str, done: Path, *overrides: str, cwd: Path) -> float:
    """`ftune <command> <overrides>` unless `done` exists; its wall seconds (kept next to `done`)."""
    wall = done.parent / f"{done.stem}.wall_seconds.txt"
    if not done.is_file():
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "ftune", command, *overrides],
                                cwd=cwd, capture_output=True, text=True)
        if result.returncode:
            sys.exit(f"ftune {command} {' '.join(overrides)} failed:\n{result.stderr[-3000:]}")
        wall.write_text(f"{time.perf_counter() - started:.1f}\n")
    return float(wall.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--heldout", type=int, default=None, help="evaluate the first N held-out paragraphs (all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "clm_squad")
    args = parser.parse_args()
    if not SQUAD.is_file():
        print(f"skipped: {SQUAD} not found (docs/tasks/clm.md)")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    train, heldout = contexts(args.out, args.heldout)
    common = ["task=clm", "model=smollm2-135m", f"task.max_length={args.max_length}"]
    before_json = args.out / "eval_heldout.json"
    before_wall = ftune("eval", before_json, *common, f"file={heldout}", cwd=args.out)
    before = json.loads(before_json.read_text())
    after = []
    for seed in args.seeds:
        run = args.out / f"lora-{args.steps}x{args.batch}-seed{seed}"
        wall = ftune("train", run / "results.json", *common, "peft=lora", f"optimizer.lr={args.lr}",
                     f"task.data.train={train}", f"task.data.validation={heldout}", f"trainer.batch_size={args.batch}",
                     f"trainer.max_steps={args.steps}", f"trainer.seed={seed}", f"run_dir={run}", "overwrite=true",
                     "logger.console=none",
                     cwd=REPO)
        after.append({"seed": seed, "wall": wall, **json.loads((run / "results.json").read_text())["validation"]})
        print(f"  seed {seed}: loss {after[-1]['loss']:.4f}, {wall:.0f} s", file=sys.stderr, flush=True)

    def cell(values: list[float], fmt: str) -> str:
        return fmt.format(statistics.fmean(values)) + (f" ± {fmt.format(statistics.stdev(values))}"
                                                       if len(values) > 1 else "")

    losses = [a["loss"] for a in after]
    table = ["| model | held-out loss | perplexity | next-token accuracy | wall s |", "| --- | --- | --- | --- | --- |",
             f"| SmolLM2-135M-Instruct (`ftune eval`, before) | {before['loss']:.4f} | {before['perplexity']:.2f} | "
             f"{100 * before['accuracy']:.2f} % | {before_wall:.0f} |",
             f"| after {args.steps} LoRA steps of {args.batch} x {args.max_length} tokens, {len(after)} seed(s) | "
             f"{cell(losses, '{:.4f}')} | {cell([math.exp(v) for v in losses], '{:.2f}')} | "
             f"{cell([100 * a['accuracy'] for a in after], '{:.2f}')} % | {statistics.fmean(a['wall'] for a in after):.0f} |"]
    print("\n".join(table), flush=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "before": before, "after": after, "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
