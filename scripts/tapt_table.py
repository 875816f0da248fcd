"""Task-adaptive pretraining (TAPT) measured: MiniLM masked-LM trained on a task's own training text without
labels (`task=mlm`), then fine-tuned on N labelled rows with `init_from`, against the same fine-tuning from the
original MiniLM (docs/tasks/mlm.md).

    python scripts/tapt_table.py --task sst2                     # full: all 67k sentences, 1,000 and 8,000 rows, 3 seeds
    python scripts/tapt_table.py --task ner                      # CoNLL-2003: MLM on its 14k training sentences
    python scripts/tapt_table.py --task sst2 --mlm-steps 150 --sizes 1000 --seeds 1 2 3     # a reduced run

Fine-tuning is the shipped reference recipe (`experiment=sst2_minilm`: full 872-row dev set;
`experiment=conll2003_minilm`: the first 500 validation sentences) at 3 epochs, as measured in docs/tasks/mlm.md
(`trainer.epochs=3`; the recipes now follow the step rule), with `task.data.max_train=N` and `trainer.seed`; the MLM step is `task=mlm model=minilm` on the training text (64-token blocks, lr 1e-4, one epoch
or --mlm-steps). Every run is an `ftune train` subprocess under --out; a finished run (results.json) is reused,
so the script continues after a stop. Prints a markdown table (mean ± sample std over seeds, the gain, wall
seconds) and writes it with every run's figure to --out/results.json. Skips (exit 0) when the data is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TASKS = {  # task -> (reference recipe, its training file, the metric results.json reports)
    "sst2": ("sst2_minilm", DATA / "sst2" / "train.tsv", "accuracy"),
    "ner": ("conll2003_minilm", DATA / "conll2003" / "train.txt", "f1"),
}
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


def corpus(task: str, out: Path) -> Path:
    """The training split's text, one sentence a line, labels dropped."""
    source, target = TASKS[task][1], out / f"{task}_text.txt"
    if task == "sst2":
        with source.open(newline="") as handle:
            lines = [row["sentence"].strip() for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    else:
        blocks = [b for b in source.read_text().split("\n\n") if b.strip() and not b.lstrip().startswith("-DOCSTART-")]
        lines = [" ".join(line.split()[0] for line in b.strip().splitlines()) for b in blocks]
    target.write_text("\n".join(line for line in lines if line) + "\n")
    return target


def train(run: Path, *overrides: str) -> dict:
    """`ftune train <overrides> run_dir=<run>` (reused when finished): its results.json and wall seconds."""
    results = run / "results.json"
    if not results.is_file():
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ftune", "train", *overrides, "logger.console=none",
                               "overwrite=true", f"run_dir={run}"], cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"ftune train {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
        (run / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
        print(f"  {run.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return {**json.loads(results.read_text()), "wall": float((run / "wall_seconds.txt").read_text())}


def cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{100 * mean:.2f}" + (f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000], help="labelled rows to fine-tune on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--mlm-steps", type=int, default=None, help="trainer.max_steps of the MLM run (default: one epoch)")
    parser.add_argument("--mlm-lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "tapt")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for every run, e.g. trainer.precision=fp32 to match runs made on a CPU without bf16")
    args = parser.parse_args()
    recipe, source, metric = TASKS[args.task]
    if not source.is_file():
        print(f"skipped: {source} not found (docs/tasks/mlm.md)")
        return
    out = args.out / args.task
    out.mkdir(parents=True, exist_ok=True)
    text = corpus(args.task, out)
    steps = [f"trainer.max_steps={args.mlm_steps}"] if args.mlm_steps else ["trainer.epochs=1"]
    mlm = train(out / mlm_name(args), "task=mlm", "model=minilm", f"task.data.train={text}",
                "task.max_length=64", "trainer.batch_size=32", f"optimizer.lr={args.mlm_lr}", "optimizer.weight_decay=0.01",
                *steps, *args.set)
    print(f"MLM: {mlm['steps']} steps, held-out masked-token loss {mlm['validation']['loss']:.3f} "
          f"(accuracy {mlm['validation']['accuracy']:.3f}), {mlm['wall']:.0f} s", flush=True)
    rows, table = {}, [f"| labelled rows | from MiniLM ({metric}) | after TAPT ({metric}) | gain (points) | "
                       "fine-tuning s (plain / TAPT) |", "| --- | --- | --- | --- | --- |"]
    for size in args.sizes:
        for start in ("plain", "tapt"):
            for seed in args.seeds:
                extra = [f"init_from={out / mlm_name(args)}"] if start == "tapt" else []
                result = train(out / f"{start}-{size}-seed{seed}", f"experiment={recipe}", f"task.data.max_train={size}",
                               "trainer.epochs=3", f"trainer.seed={seed}", *extra, *args.set)
                rows.setdefault(f"{size}", {}).setdefault(start, []).append(
                    {"seed": seed, metric: result["validation"][metric], "wall": result["wall"]})
        plain = [r[metric] for r in rows[f"{size}"]["plain"]]
        tapt = [r[metric] for r in rows[f"{size}"]["tapt"]]
        gains = [t - p for t, p in zip(tapt, plain, strict=True)]  # paired by seed
        wall = [statistics.fmean(r["wall"] for r in rows[f"{size}"][s]) for s in ("plain", "tapt")]
        table.append(f"| {size:,} | {cell(plain)} | {cell(tapt)} | {cell(gains)} | {wall[0]:.0f} / {wall[1]:.0f} |")
    print("\n".join(table), flush=True)
    (out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                  "mlm": {k: mlm[k] for k in ("steps", "train", "validation", "wall")},
                                                  "runs": rows, "table": table}, indent=2) + "\n")


def mlm_name(args: argparse.Namespace) -> str:
    return f"mlm-{args.mlm_steps or 'epoch'}"


if __name__ == "__main__":
    main()
