"""The GGUF export of the SmolLM2 SQuAD sft run answers the same questions: EM/F1 next to PyTorch's.

    python scripts/benchmarks/gguf_squad_check.py            # LoRA, 30 steps (docs/generation.md's set-up)

Runs scripts/sft_squad_check.py (train with LoRA, evaluate the run in PyTorch), then
`ftune export format=gguf` (LoRA merged, checked by reading back) and `ftune eval model=gguf:<file>` on the
same questions: the evaluated model is the one transformers reads out of the GGUF file. Prints and writes
<work>/gguf_summary.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> float:
    started = time.perf_counter()
    print("+ " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(list(args), check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/gguf_squad_check")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    ftune = str(Path(sys.executable).parent / "ftune")
    run(sys.executable, str(REPO / "scripts" / "sft_squad_check.py"), "--peft", "lora", "--lr", "1e-3", "--steps",
        str(args.steps), "--batch-size", "4", "--work", str(work))
    torch_summary = json.loads((work / "summary.json").read_text())
    out = work / "gguf"
    export_s = run(ftune, "export", f"run_dir={work / 'run_lora'}", "format=gguf", f"out={out}", "overwrite=true")
    meta = json.loads((out / "ftune.json").read_text())["export"]
    evaluation = work / "eval.jsonl"
    gguf_eval = work / "gguf_eval"
    gguf_eval.mkdir(exist_ok=True)
    eval_s = run("sh", "-c", f"cd {gguf_eval} && {ftune} eval model=gguf:{out / 'model.gguf'} task=sft "
                             f"file={evaluation} task.eval_generate=true task.generation.max_new_tokens=24 "
                             "task.max_length=384 batch_size=16")
    scores = json.loads((gguf_eval / "eval_eval.json").read_text())
    summary = {"pytorch": torch_summary["after"], "gguf": {k: round(scores[k], 2) for k in ("exact_match", "token_f1", "loss")},
               "base_before_tuning": torch_summary["before"], "eval_questions": torch_summary["eval_questions"],
               "gguf_file_mb": round((out / "model.gguf").stat().st_size / 2**20, 1), "export_check": meta,
               "export_seconds": round(export_s, 1), "gguf_eval_seconds": round(eval_s, 1)}
    (work / "gguf_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
