"""Data at scale: memory and time of `ftune train` as the training set grows (issue 13).

    python scripts/bench_scale.py                        # 1x, 10x, 100x CoNLL-2003 train + 200k sft (make bench)
    python scripts/bench_scale.py --scales 1,10 --sft 20000 --steps 5   # what fits in a few minutes
    python scripts/bench_scale.py --scales '' --sft 0 --text-mb 200,2000  # raw text only: task=mlm on 0.2 and 2 GB

Builds CoNLL-2003 train repeated k times (14,041 sentences each) and an sft set of N prompt/response
conversations generated from SQuAD v1.1 dev questions (question → answer sentence), in a temporary folder.
Each workload trains twice in a fresh subprocess with its own empty feature cache: the first run tokenises,
the second is a cache hit. While a run goes, /proc/<pid>/status of the run and its children (the
featurisation workers) is sampled every 50 ms: peak RssAnon (anonymous memory: what the data path costs,
page cache of memory-mapped files excluded) and peak VmRSS. From the log: featurisation throughput, and
the time from the start of the process to the first training step. Ratios are to the 1x run of the same
kind. With --text-mb, a raw-text file of that many MB (SQuAD v1.1 contexts, one document a line, repeated with
a line number so no two lines are equal) trains `task=mlm` (issue 28: memory must not grow with the corpus).
A markdown table goes to stdout (and --out). Skips (exit 0) when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CONLL, SQUAD = DATA / "conll2003", DATA / "squad_v1.1" / "dev-v1.1.json"
TOKENISED = re.compile(r"train: tokenised (\d+) examples into \d+ features in ([\d.]+) s")


def build_conll(folder: Path, times: int) -> Path:
    path = folder / f"conll_train_x{times}.txt"
    if not path.exists():
        text = (CONLL / "train.txt").read_bytes()
        with open(path, "wb") as out:
            for _ in range(times):
                out.write(text)
    return path


def build_sft(folder: Path, count: int) -> Path:
    """`count` one-turn conversations: a SQuAD question and the context sentence holding its answer."""
    path = folder / f"sft_{count}.jsonl"
    if path.exists():
        return path
    pairs = []
    for article in json.loads(SQUAD.read_text())["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                start = context.rfind(". ", 0, answer["answer_start"]) + 1
                end = context.find(". ", answer["answer_start"])
                sentence = context[start:end + 1 if end >= 0 else None].strip()
                pairs.append((qa["question"], f"{answer['text']}. {sentence}"))
    with open(path, "w") as out:
        for i in range(count):
            question, response = pairs[i % len(pairs)]
            out.write(json.dumps({"prompt": question, "response": response}) + "\n")
    return path


def _tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                stack += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


def _status_kb(pid: int) -> dict[str, int]:
    """RssAnon and VmRSS of a process, and Pss_Anon: a forked worker's RssAnon also counts the pages it
    still shares with its parent, so the sum over a process tree uses Pss_Anon (shared pages split)."""
    found = {}
    for name, keys in (("status", ("RssAnon", "VmRSS")), ("smaps_rollup", ("Pss_Anon",))):
        try:
            lines = Path(f"/proc/{pid}/{name}").read_text().splitlines()
        except OSError:
            continue
        found.update({k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines if ":" in line)
                      if k in keys})
    return found


def build_text(folder: Path, megabytes: int) -> Path:
    """`megabytes` MB of real English text, one document (a SQuAD context) a line."""
    contexts = [" ".join(p["context"].split()) for article in json.loads(SQUAD.read_text())["data"]
                for p in article["paragraphs"]]
    target, size, number = folder / f"text_{megabytes}mb.txt", megabytes * 1_000_000, 0
    with target.open("w") as out:
        while out.tell() < size:
            for context in contexts:
                number += 1
                out.write(f"{number}. {context}\n")
                if out.tell() >= size:
                    break
    return target


def run_once(args: list[str], env: dict) -> dict:
    """One `ftune train` in a subprocess: peaks sampled from /proc, milestones from its log lines."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ftune", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"anon": 0, "rss": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            statuses = [_status_kb(p) for p in _tree(proc.pid)]
            peak["anon"] = max(peak["anon"], sum(s.get("Pss_Anon", s.get("RssAnon", 0)) for s in statuses))
            peak["main_anon"] = max(peak.get("main_anon", 0), statuses[0].get("RssAnon", 0) if statuses else 0)
            peak["rss"] = max(peak["rss"], sum(s.get("VmRSS", 0) for s in statuses))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    first_step, tokenised, log = None, None, []
    for line in proc.stdout:
        log.append(line)
        if first_step is None and re.search(r"\bstep 1/\d+", line):
            first_step = time.perf_counter() - started
        if match := TOKENISED.search(line):
            tokenised = int(match[1]) / max(float(match[2]), 1e-9)
    proc.wait()
    done.set()
    sampler.join()
    if proc.returncode:
        sys.stderr.write("".join(log[-30:]))
        raise SystemExit(f"ftune train failed ({proc.returncode}): {' '.join(args)}")
    return {"anon_mb": peak["anon"] / 1024, "main_anon_mb": peak.get("main_anon", 0) / 1024, "rss_mb": peak["rss"] / 1024, "first_step_s": first_step,
            "featurize_per_s": tokenised, "wall_s": time.perf_counter() - started}


def workloads(folder: Path, scales: list[int], sft: int, steps: int,
              text_mb: list[int]) -> list[tuple[str, str, list[str]]]:
    common = [f"trainer.max_steps={steps}", "trainer.log_every=1", "trainer.eval_every=null", "trainer.save_every=null",
              "logger.console=plain", "logger.jsonl=false"]
    runs = []
    for k in scales:
        runs.append((f"CoNLL train x{k} ({14041 * k:,} sentences)", "ner",
                     ["task=ner", "model=minilm", f"task.data.train={build_conll(folder, k)}",
                      f"task.data.validation={CONLL / 'validation.txt'}", "task.data.max_validation=200", *common]))
    if sft:
        runs.append((f"sft, {sft:,} conversations", "sft",
                     ["task=sft", "model=smollm2-135m", f"task.data.train={build_sft(folder, sft)}",
                      "task.max_length=256", "trainer.batch_size=4", "trainer.grad_accum=1", *common]))
    if text_mb:
        validation = folder / "text_validation.txt"  # a fixed small one: a held-out 5 % of 2 GB would be 100 MB
        validation.write_text("".join(build_text(folder, 1).open().readlines()[:200]))
    for megabytes in text_mb:
        runs.append((f"mlm, {megabytes:,} MB of raw text", "mlm",
                     ["task=mlm", "model=minilm", f"task.data.train={build_text(folder, megabytes)}",
                      f"task.data.validation={validation}", "task.max_length=128", "trainer.batch_size=8", *common]))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,10,100", help="repetitions of CoNLL-2003 train")
    parser.add_argument("--sft", type=int, default=200_000, help="conversations in the sft workload (0: none)")
    parser.add_argument("--steps", type=int, default=20, help="trainer.max_steps of every run")
    parser.add_argument("--text-mb", default="", help="sizes (MB) of generated raw text for task=mlm, e.g. 200,2000")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args()
    if not (CONLL / "train.txt").is_file() or ((args.sft or args.text_mb) and not SQUAD.is_file()):
        print(f"skipped: {CONLL} or {SQUAD} is missing (see ../shared/data/README.md)")
        return 0
    rows, base = [], {}
    with tempfile.TemporaryDirectory(prefix="ftune-bench-scale-") as tmp:
        folder = Path(tmp)
        sizes = [[int(s) for s in value.split(",") if s] for value in (args.scales, args.text_mb)]
        for label, kind, overrides in workloads(folder, sizes[0], args.sft, args.steps, sizes[1]):
            env = {**os.environ, "FTUNE_CACHE_DIR": str(folder / f"cache-{len(rows)}"), "HF_HUB_OFFLINE": "1",
                   "HF_DATASETS_OFFLINE": "1"}
            for attempt in ("first run", "cache hit"):
                result = run_once([*overrides, f"run_dir={folder / f'run-{len(rows)}'}", "overwrite=true"], env)
                base.setdefault((kind, attempt), result)
                rows.append((label, attempt, result, base[(kind, attempt)]))
                print(f"{label}, {attempt}: {json.dumps(result)}", file=sys.stderr, flush=True)

    def ratio(value, reference):
        return f" ({value / reference:.2f}x)" if value and reference else ""

    def cell(value, reference, fmt):
        return "-" if value is None else f"{fmt.format(value)}{ratio(value, reference)}"

    lines = ["| workload | run | peak anonymous MB | peak RSS MB | featurisation examples/s | first step after s | wall s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, attempt, r, b in rows:
        lines.append(f"| {label} | {attempt} | {cell(r['anon_mb'], b['anon_mb'], '{:,.0f}')} | "
                     f"{cell(r['rss_mb'], b['rss_mb'], '{:,.0f}')} | "
                     f"{cell(r['featurize_per_s'], b['featurize_per_s'], '{:,.0f}')} | "
                     f"{cell(r['first_step_s'], b['first_step_s'], '{:.1f}')} | {r['wall_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(f"`{' '.join(['python', 'scripts/bench_scale.py', *sys.argv[1:]])}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
