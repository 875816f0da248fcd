"""Class-incremental NER on CoNLL-2003 with MiniLM: what each continual-learning method keeps (docs/continual.md).

Stage 1 trains on the training sentences with only PER and LOC kept (ORG and MISC tags set to O); stage 2 starts
from it (init_from) on the same sentences with only ORG and MISC kept. After stage 2, F1 on PER/LOC, on ORG/MISC
and on all four types, on the validation sentences, for each method:

    naive       stage 2 fine-tunes the stage-1 model on the stage-2 data alone
    replay10/30 continual.replay=<stage-1 training file> continual.replay_ratio=0.1 / 0.3
    l2sp, ewc   continual=l2sp / continual=ewc (continual.strength as given)
    pseudo      continual.pseudo_label=true: the stage-1 model's PER/LOC entities written into the stage-2 data
                where it tags O (the background shift of class-incremental NER)
    adapter     one LoRA adapter per stage on the same base (peft=lora continual.adapter=s1 / s2); each stage's
                types are scored with its own adapter; "all four" is not one model's and is left empty
    joint       the upper bound: one run on all four types

    python scripts/continual_conll.py                        # full: 14,041 / 3,250 sentences, 3 epochs, 3 seeds
    python scripts/continual_conll.py --train 2000 --validation 1000 --epochs 1 --seeds 1   # the reduced run

Every run is an `ftune train` subprocess in --out; F1 comes from `ftune eval ... output_format=json` (per-type
counts, so the F1 of a group of types is the micro F1 over those types). Prints a markdown table (mean ± std over
seeds) and writes it with every run's figures to --out/results.json. Skips (exit 0) when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "conll2003"
OLD, NEW = ("PER", "LOC"), ("ORG", "MISC")
METHODS = ("naive", "replay10", "replay30", "l2sp", "ewc", "pseudo", "adapter", "joint")
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


def sentences(path: Path, limit: int | None) -> list[list[list[str]]]:
    blocks = [b for b in path.read_text().split("\n\n") if b.strip() and not b.lstrip().startswith("-DOCSTART-")]
    return [[line.split() for line in b.strip().splitlines()] for b in blocks[:limit]]


def write(path: Path, data: list[list[list[str]]], keep: tuple[str, ...]) -> Path:
    """The sentences with only the entity types in `keep` (others set to O): token and tag columns."""
    out = []
    for sentence in data:
        rows = [f"{cols[0]} {cols[-1] if cols[-1] == 'O' or cols[-1][2:] in keep else 'O'}" for cols in sentence]
        out.append("\n".join(rows))
    path.write_text("\n\n".join(out) + "\n")
    return path


def ftune(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "ftune", *args], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"ftune {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def train(out: Path, name: str, files: dict, args: argparse.Namespace, seed: int, *extra: str) -> Path:
    run = out / f"{name}-seed{seed}"
    if (run / "results.json").is_file():  # a finished run is reused: the script can be rerun after a stop
        return run
    started = time.perf_counter()
    ftune("train", "task=ner", f"model={args.model}", f"task.data.train={files['train']}",
          f"task.data.validation={files['validation']}", "task.data.test=null", f"trainer.epochs={args.epochs}",
          f"trainer.seed={seed}", "logger.console=none", "overwrite=true", f"run_dir={run}",
          *([f"trainer.batch_size={args.batch_size}"] if args.batch_size else []), *extra)
    print(f"  {run.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return run


def counts(run: Path, file: Path, *extra: str) -> dict:
    """Per-type (gold, predicted, correct) of a run's model on a file."""
    metrics = json.loads(ftune("eval", f"run_dir={run}", f"file={file}", "output_format=json", *extra))
    found = {}
    for kind, m in metrics["per_type"].items():
        correct = round(m["recall"] * m["support"])
        found[kind] = (m["support"], round(correct / m["precision"]) if m["precision"] else 0, correct)
    return found


def f1(found: dict, kinds: tuple[str, ...]) -> float | None:
    gold, guess, correct = (sum(found.get(k, (0, 0, 0))[i] for k in kinds) for i in range(3))
    if not gold:
        return None
    return 2 * correct / (gold + guess) if gold + guess else 0.0


def seconds(run: Path) -> float:
    return json.loads((run / "results.json").read_text())["train"]["seconds"]


def write_table(out: Path, args: argparse.Namespace, rows: dict[str, list[dict]]) -> None:
    table = ["| method | F1 PER/LOC | F1 ORG/MISC | F1 all four | train seconds (both stages) |",
             "| --- | --- | --- | --- | --- |"]

    def cell(values: list) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "—"
        mean = statistics.mean(values)
        return f"{mean:.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")

    for method, found in rows.items():
        if found:
            table.append(f"| {method} | {cell([r['old'] for r in found])} | {cell([r['new'] for r in found])} | "
                         f"{cell([r['all'] for r in found])} | {cell([r['seconds'] for r in found]).split('.')[0]} |")
    print("\n".join(table), flush=True)
    (out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": rows,
                                                  "table": table}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=None, help="first N training sentences (default: all)")
    parser.add_argument("--validation", type=int, default=None, help="first N validation sentences (default: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="trainer.batch_size (default: the trainer's)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--strength", type=float, default=None, help="continual.strength of l2sp and ewc")
    parser.add_argument("--adapter-lr", type=float, default=1e-3, help="optimizer.lr of the LoRA runs")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "continual_conll")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (docs/continual.md)")
        return
    out, methods = args.out, args.methods.split(",")
    out.mkdir(parents=True, exist_ok=True)
    train_sentences = sentences(DATA / "train.txt", args.train)
    val_sentences = sentences(DATA / "validation.txt", args.validation)
    stage1 = {"train": write(out / "s1_train.txt", train_sentences, OLD),
              "validation": write(out / "s1_validation.txt", val_sentences, OLD)}
    stage2 = {"train": write(out / "s2_train.txt", train_sentences, NEW),
              "validation": write(out / "s2_validation.txt", val_sentences, NEW)}
    joint = {"train": write(out / "all_train.txt", train_sentences, OLD + NEW),
             "validation": write(out / "all_validation.txt", val_sentences, OLD + NEW)}
    strength = [f"continual.strength={args.strength}"] if args.strength is not None else []
    lora = ["peft=lora", f"optimizer.lr={args.adapter_lr}"]
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in range(1, args.seeds + 1):
        first = train(out, "stage1", stage1, args, seed) if set(methods) - {"adapter", "joint"} else None
        for method in methods:
            write_table(out, args, rows)  # the methods so far: a stopped run still leaves them
            if method == "joint":
                run = train(out, "joint", joint, args, seed)
                found = counts(run, joint["validation"])
                rows[method].append({"old": f1(found, OLD), "new": f1(found, NEW), "all": f1(found, OLD + NEW),
                                     "seconds": seconds(run)})
                continue
            if method == "adapter":
                s1 = train(out, "adapter_stage1", stage1, args, seed, *lora, "continual.adapter=s1")
                run = train(out, "adapter", stage2, args, seed, *lora, "continual.adapter=s2",
                            f"continual.previous=[{s1}]")
                old = counts(run, stage1["validation"], "adapter=s1")
                new = counts(run, stage2["validation"], "adapter=s2")
                rows[method].append({"old": f1(old, OLD), "new": f1(new, NEW), "all": None,
                                     "seconds": seconds(s1) + seconds(run),
                                     "forgetting": json.loads((run / "results.json").read_text())["forgetting"]})
                continue
            extra = {"naive": [], "replay10": [f"continual.replay={stage1['train']}", "continual.replay_ratio=0.1"],
                     "replay30": [f"continual.replay={stage1['train']}", "continual.replay_ratio=0.3"],
                     "l2sp": ["continual=l2sp", *strength], "ewc": ["continual=ewc", *strength],
                     "pseudo": ["continual.pseudo_label=true"]}[method]
            run = train(out, method, stage2, args, seed, f"init_from={first}", f"continual.previous=[{first}]", *extra)
            found = counts(run, joint["validation"])
            rows[method].append({"old": f1(found, OLD), "new": f1(found, NEW), "all": f1(found, OLD + NEW),
                                 "seconds": seconds(first) + seconds(run),
                                 "forgetting": json.loads((run / "results.json").read_text())["forgetting"]})
    write_table(out, args, rows)


if __name__ == "__main__":
    main()
