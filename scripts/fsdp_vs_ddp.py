"""FSDP vs DDP with 2 CPU processes (gloo): per-rank memory and step time of the same training run.

    python scripts/fsdp_vs_ddp.py                                   # MiniLM on the shipped NER demo set
    python scripts/fsdp_vs_ddp.py --model smollm2-135m --task sft --data ../shared/...  (any ftune overrides)
    python scripts/fsdp_vs_ddp.py -- trainer.max_steps=40          # extra overrides after --

Each strategy runs `ftune train` under torchrun with 2 processes; every rank writes its peak resident
memory (ru_maxrss) when it exits. Printed and written to <work>/fsdp_vs_ddp.json: per-rank parameter MB
(from the shards themselves), peak RSS per rank, training samples/s and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# each rank: run the CLI, then write its peak RSS (MB) to $PEAK_DIR/rank<R>
WORKER = ("import atexit, os, resource, sys\n"
          "atexit.register(lambda: open(os.path.join(os.environ['PEAK_DIR'], 'rank' + os.environ['RANK']), 'w')"
          ".write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))\n"
          "from ftune.cli import main\nmain(sys.argv[1:])\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--task", default="ner_demo")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", default="runs/fsdp_vs_ddp")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "worker.py").write_text(WORKER)
    figures = {}
    for strategy in ("ddp", "fsdp"):
        peaks = work / f"peak_{strategy}"
        peaks.mkdir(exist_ok=True)
        run_dir = work / strategy
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   str(work / "worker.py"), "train", f"model={args.model}", f"task={args.task}",
                   f"trainer.strategy={strategy}", f"trainer.max_steps={args.steps}",
                   f"trainer.batch_size={args.batch_size}", "trainer.log_every=10", "logger.console=plain",
                   f"run_dir={run_dir}", "overwrite=true", *args.overrides]
        print("+ " + " ".join(command[3:]), file=sys.stderr, flush=True)
        subprocess.run(command, check=True, env={**os.environ, "PEAK_DIR": str(peaks)})
        results = json.loads((run_dir / "results.json").read_text())
        figures[strategy] = {
            "parameter_mb_per_rank": results["strategy"]["parameter_mb_per_rank"],
            "peak_rss_mb_per_rank": [round(float((peaks / f"rank{r}").read_text())) for r in (0, 1)],
            "samples_per_s": results["train"]["samples_per_s"], "train_seconds": results["train"]["seconds"],
            "steps": results["steps"], "precision": results["precision"],
            "validation": {k: v for k, v in results.get("validation", {}).items() if isinstance(v, float)}}
    figures["command"] = " ".join(sys.argv)
    (work / "fsdp_vs_ddp.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
