"""Choose the shipped optimizer/scheduler defaults by measurement: a seeded grid over warm-up, weight decay,
learning rate and epochs on three tasks (NER on CoNLL-2003 slices, SST-2 slices, SQuAD v1.1 split by article).

    python scripts/recipe_search.py                       # the full grid (hours of CPU; minutes on a GPU)
    python scripts/recipe_search.py --scale small         # the smaller data of docs/recipes.md
    python scripts/recipe_search.py --table-only          # print the tables of what is already measured
    python scripts/recipe_search.py --table-only --train-size 1000   # only the runs on 1,000 training examples
    python scripts/recipe_search.py --shard 0/2 --out a.json & python scripts/recipe_search.py --shard 1/2 --out b.json
    python scripts/recipe_search.py --merge a.json b.json # two processes (OMP_NUM_THREADS=1 each), then one file

Resumable: every finished run is appended to the results JSON (--out) at once, and a run already there
(same task, model, data scale, setting and seed) is skipped, so an interrupted search continues where it
stopped and a larger grid reuses the smaller one's runs. Runs go through `ftune train` in this process
(no per-run interpreter start), each in its own run directory under --work.

The tables: per task, mean ± std (sample std over seeds) of the main validation metric per setting; then
one row per setting with its gap to the best setting of each task and the worst gap. The recommended
default is the setting whose worst gap is smallest (never far from the best on any task), not the one that
wins one dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

# Per scale: train/validation sizes per task (sentences, SST-2 rows, SQuAD articles) and the grid.
SCALES = {
    "full": {
        "ner": {"train": 4000, "validation": 3250}, "sst2": {"train": 8000, "validation": 872},
        "qa": {"train_articles": [0, 36], "validation_articles": [36, 48]},
        "warmup_wd": list(itertools.product([0.0, 0.06, 0.1], [0.0, 0.01])), "epochs": [3], "seeds": [1, 2, 3],
    },
    # the data sizes measured in docs/recipes.md (2 h of a 2-core CPU; the runs there are a subset of this
    # grid, each table says which settings and seeds: docs/recipes.md gives the exact commands)
    "small": {
        "ner": {"train": 1000, "validation": 500}, "sst2": {"train": 1000, "validation": 872},
        "qa": {"train_articles": [1, 4], "validation_articles": [4, 6]},
        "warmup_wd": list(itertools.product([0.0, 0.06, 0.1], [0.0, 0.01])), "epochs": [3], "seeds": [1, 2, 3],
    },
}
# Three learning rates per model, around each one's usual value. MiniLM's were 5e-5, 1e-4, 2e-4 until
# 2e-4 (the top) won NER by 11 points and 5e-5 lost it by 16 (docs/recipes.md): now one step higher.
LRS = {"minilm": [1e-4, 2e-4, 4e-4], "bert-base-cased": [2e-5, 3e-5, 5e-5], "roberta-base": [1e-5, 2e-5, 3e-5],
       "distilbert-base-cased": [3e-5, 5e-5, 1e-4]}
TASKS = ("ner", "sst2", "qa")
POINTS = {"qa": 1}  # metric → points: SQuAD F1 is already 0-100, NER F1 and accuracy are 0-1


def squad_by_article(work: Path, train: list[int], validation: list[int]) -> tuple[Path, Path]:
    """SQuAD v1.1 dev split by article, so that no validation question shares a context with training:
    articles [start, end) of each range. Derived files in --work, never copies in the repository."""
    articles = json.loads((DATA / "squad_v1.1" / "dev-v1.1.json").read_text())["data"]
    if max(train[1], validation[1]) > len(articles) or train[1] > validation[0]:
        sys.exit(f"recipe_search: SQuAD dev has {len(articles)} articles; train {train} must come before "
                 f"validation {validation}, both inside it")
    folder = work / "data" / f"squad-{train[0]}-{train[1]}-{validation[0]}-{validation[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.json", folder / "validation.json"
    for path, (start, end) in zip(paths, (train, validation), strict=True):
        if not path.is_file():
            path.write_text(json.dumps({"version": "1.1", "data": articles[start:end]}))
    return paths


def task_overrides(task: str, sizes: dict, work: Path) -> list[str]:
    if task == "ner":
        folder = DATA / "conll2003"
        return ["task=ner", f"task.data.train={folder / 'train.txt'}", f"task.data.validation={folder / 'validation.txt'}",
                f"task.data.max_train={sizes['train']}", f"task.data.max_validation={sizes['validation']}"]
    if task == "sst2":
        folder = DATA / "sst2"
        return ["task=sst2", f"task.data.train={folder / 'train.tsv'}", f"task.data.validation={folder / 'dev.tsv'}",
                f"task.data.max_train={sizes['train']}", f"task.data.max_validation={sizes['validation']}"]
    train, validation = squad_by_article(work, sizes["train_articles"], sizes["validation_articles"])
    return ["task=qa", f"task.data.train={train}", f"task.data.validation={validation}"]


def run_key(task: str, model: str, sizes: dict, setting: dict, seed: int) -> str:
    scale = ",".join(f"{k}={v}" for k, v in sizes.items())
    return f"{task}|{model}|{scale}|" + setting_name(setting) + f"|seed={seed}"


def setting_name(setting: dict) -> str:
    name = f"lr={setting['lr']:g} warmup={setting['warmup']:g} wd={setting['weight_decay']:g} ep={setting['epochs']}"
    # batch size only when the grid sets it: the runs measured before it was a grid axis keep their keys
    name += f" bs={setting['batch_size']}" if setting.get("batch_size") else ""
    # the step rule (trainer.min_steps, capped by trainer.max_epochs): one row across data sizes
    return name + (f" min_steps={setting['min_steps']}/{setting['max_epochs']}" if setting.get("min_steps") else "")


def train_once(overrides: list[str]) -> dict:
    """`ftune train <overrides>` in this process; the run's results.json, or {"error": ...}."""
    from hydra.core.global_hydra import GlobalHydra

    from ftune import cli

    run_dir = Path(next(o for o in overrides if o.startswith("run_dir="))[8:])
    GlobalHydra.instance().clear()
    try:
        cli.main(["train", *overrides])
    except SystemExit as stop:
        if stop.code in (130, 143):  # Ctrl-C / SIGTERM: ftune saved a checkpoint; stop the search too
            raise
        if stop.code not in (0, None):
            return {"error": f"exit {stop.code}"}
    finally:
        GlobalHydra.instance().clear()
    results = run_dir / "results.json"
    return json.loads(results.read_text()) if results.is_file() else {"error": "no results.json"}


def load(out: Path) -> dict:
    return json.loads(out.read_text()) if out.is_file() else {"runs": {}}


def save(out: Path, data: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    temporary.replace(out)  # atomic: an interrupted search never leaves a half-written file


def grid(args: argparse.Namespace) -> list[tuple[str, str, dict, int]]:
    """(task, model, setting, seed) of every run of the search, this shard's only with --shard."""
    scale = SCALES[args.scale]
    pairs = scale["warmup_wd"]
    if args.warmup or args.weight_decay:
        pairs = list(itertools.product(args.warmup or sorted({w for w, _ in pairs}),
                                       args.weight_decay or sorted({d for _, d in pairs})))
    seeds = args.seeds or scale["seeds"]
    todo = []  # setting outermost: a search stopped early has whole settings (all tasks, all seeds)
    for model in args.models:
        lrs = args.lrs or LRS[model]
        for lr, (warmup, wd), batch, epochs, least in itertools.product(
                lrs, pairs, args.batch_sizes or [None], args.epochs or scale["epochs"], args.min_steps or [None]):
            setting = {"lr": lr, "warmup": warmup, "weight_decay": wd, "epochs": epochs, "batch_size": batch,
                       "min_steps": least, "max_epochs": args.max_epochs if least else None}
            todo += [(task, model, setting, seed) for task in args.tasks for seed in seeds]
    if args.shard:  # every n-th run from the i-th: n processes (one per core or machine), each its own --out
        index, count = args.shard
        todo = todo[index::count]
    return todo


def sizes_of(args: argparse.Namespace) -> dict:
    """The scale's data sizes, NER's and SST-2's train / validation sizes replaced by --train-size /
    --validation-size (the keys carry the sizes, so each size is its own table and gap-table column)."""
    scale = {task: dict(sizes) if isinstance(sizes, dict) else sizes for task, sizes in SCALES[args.scale].items()}
    for task in ("ner", "sst2"):
        if args.train_size:
            scale[task]["train"] = args.train_size
        if args.validation_size:
            scale[task]["validation"] = args.validation_size
    return scale


def search(args: argparse.Namespace) -> None:
    scale = sizes_of(args)
    data = load(args.out)
    todo = grid(args)
    done = sum(run_key(t, m, scale[t], s, seed) in data["runs"] for t, m, s, seed in todo)
    print(f"recipe_search: {len(todo)} runs in the grid, {done} already measured in {args.out}", file=sys.stderr)
    for number, (task, model, setting, seed) in enumerate(todo, 1):
        key = run_key(task, model, scale[task], setting, seed)
        if key in data["runs"]:
            continue
        # readable and unique (the data sizes hashed in), free of the `=` Hydra's override grammar refuses
        run_dir = (args.work / "runs" / task / model / (f"lr{setting['lr']:g}_w{setting['warmup']:g}_wd"
                   f"{setting['weight_decay']:g}_ep{setting['epochs']}_bs{setting['batch_size'] or ''}_ms{setting['min_steps'] or ''}_s{seed}_" + hashlib.sha1(key.encode()).hexdigest()[:8]))
        overrides = [*task_overrides(task, scale[task], args.work), f"model={model}",
                     f"optimizer.lr={setting['lr']}", f"optimizer.weight_decay={setting['weight_decay']}",
                     f"scheduler.warmup_ratio={setting['warmup']}", "scheduler.warmup_steps=0",
                     f"trainer.seed={seed}",
                     *([f"trainer.batch_size={setting['batch_size']}"] if setting["batch_size"] else []),
                     # the step rule from `epochs` (trainer.epochs null: min_epochs raised), or exactly `epochs`
                     *(["trainer.epochs=null", f"trainer.min_epochs={setting['epochs']}",
                        f"trainer.min_steps={setting['min_steps']}", f"trainer.max_epochs={setting['max_epochs']}"]
                       if setting["min_steps"] else [f"trainer.epochs={setting['epochs']}"]), "trainer.keep_last=1",
                     "logger.console=none", f"run_dir={run_dir}", "overwrite=true", *args.extra]
        started = time.perf_counter()
        results = train_once(overrides)
        if "error" in results:
            print(f"recipe_search: {key}: failed ({results['error']}); not recorded, rerun retries it", file=sys.stderr)
            continue
        metric = results["main_metric"]
        data["runs"][key] = {"task": task, "model": model, "sizes": scale[task], "setting": setting_name(setting),
                             "seed": seed, "metric": metric, "value": results["validation"][metric],
                             "seconds": round(time.perf_counter() - started, 1), "precision": results["precision"],
                             "command": "ftune train " + " ".join(overrides)}
        save(args.out, data)
        if not args.keep_models:  # ~350 MB of weights and optimizer state per MiniLM run; the grid needs the figures
            for folder in ("best", "checkpoints"):
                shutil.rmtree(run_dir / folder, ignore_errors=True)
        print(f"recipe_search: [{number}/{len(todo)}] {key}: {metric} {results['validation'][metric]:.4f} "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(tables(data))


def aggregate(data: dict) -> dict:
    """{(task, model, sizes): {setting: [values over seeds]}}."""
    groups: dict = {}
    for run in data["runs"].values():
        sizes = ",".join(f"{k}={v}" for k, v in run["sizes"].items())
        groups.setdefault((run["task"], run["model"], sizes), {}).setdefault(run["setting"], []).append(run["value"])
    return groups


def fill_unraised_rules(groups: dict) -> list[str]:
    """A step-rule setting (`... min_steps=N/cap`) not run at a data size where it raises no epoch trains exactly
    its plain setting there: that setting's runs stand for it. Decided by ftune's own rule (steps.epochs_for)
    on the training size, a lower bound of the feature count (a long sentence may make two windows), so a rule
    that adds no epoch for the examples adds none for the features. Returns a note per substitution."""
    from omegaconf import OmegaConf

    from ftune.engine.steps import epochs_for

    notes, rules = [], {s for by_setting in groups.values() for s in by_setting if " min_steps=" in s}
    for (task, _model, sizes), by_setting in groups.items():
        train = re.search(r"train=(\d+)", sizes)
        for rule in sorted(rules - set(by_setting)):
            plain, spec = rule.split(" min_steps=")
            least, cap = (int(v) for v in spec.split("/"))
            epochs, batch = int(re.search(r"ep=(\d+)", plain)[1]), re.search(r"bs=(\d+)", plain)
            if train is None or batch is None or plain not in by_setting:
                continue
            cfg = OmegaConf.create({"epochs": None, "min_epochs": epochs, "min_steps": least, "max_epochs": cap,
                                    "batch_size": int(batch[1]), "grad_accum": 1})
            if epochs_for(int(train[1]), cfg) == epochs:
                by_setting[rule] = by_setting[plain]
                notes.append(f"{task} ({sizes}): `{rule}` adds no epoch to {int(train[1]):,} examples, so its row "
                             f"is `{plain}`'s runs")
    return notes


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def column_order(column: str) -> tuple:
    """Gap-table columns by task, then by training size as a number (1000 before 4000 before 15000)."""
    size = re.search(r"train=(\d+)", column)
    return column.split(" (")[0], int(size[1]) if size else 0


def tables(data: dict) -> str:
    """Markdown: one table per (task, model, data size), then the across-task choice per model."""
    groups = aggregate(data)
    notes = fill_unraised_rules(groups)
    lines: list[str] = []
    best: dict = {}  # (model, task column) -> (best mean, {setting: mean})
    for (task, model, sizes), by_setting in sorted(groups.items()):
        metric = next(r["metric"] for r in data["runs"].values() if r["task"] == task)
        points = POINTS.get(task, 100)
        lines += [f"\n**{task}, {model}** ({sizes}): validation {metric} in points, mean ± std over seeds\n",
                  "| setting | mean ± std | min – max | seeds |", "| --- | --- | --- | --- |"]
        means = {}
        for setting, values in sorted(by_setting.items()):
            mean, std = mean_std(values)
            means[setting] = points * mean
            spread = "–" if math.isnan(std) else f"{points * std:.2f}"
            lines.append(f"| {setting} | {points * mean:.2f} ± {spread} | {points * min(values):.2f} – "
                         f"{points * max(values):.2f} | {len(values)} |")
        # a task measured at several data sizes is one column per size
        several = sum(t == task and m == model for t, m, _ in groups) > 1
        best[(model, f"{task} ({sizes})" if several else task)] = (max(means.values()), means)
    for model in sorted({m for m, _ in best}):
        tasks = sorted((t for m, t in best if m == model), key=column_order)
        shared = set.intersection(*(set(best[(model, t)][1]) for t in tasks))
        if not shared:
            continue
        lines += [f"\n**{model}: gap to each task's best setting (points; worst gap decides)**\n",
                  "| setting | " + " | ".join(tasks) + " | mean gap | worst gap |",
                  "| --- |" + " --- |" * (len(tasks) + 2)]
        rows = []
        for setting in shared:
            gaps = [best[(model, t)][0] - best[(model, t)][1][setting] for t in tasks]
            rows.append((max(gaps), statistics.fmean(gaps), setting, gaps))
        for worst, mean_gap, setting, gaps in sorted(rows):
            lines.append(f"| {setting} | " + " | ".join(f"{g:.2f}" for g in gaps) + f" | {mean_gap:.2f} | {worst:.2f} |")
        lines.append(f"\nchoice for {model}: `{sorted(rows)[0][2]}` (smallest worst gap)")
    return "\n".join(lines + [f"\n{note}" for note in notes]) + "\n"


def write_fingerprints(names: list[str]) -> None:
    """Put the data fingerprints of each named experiment (local data only) into its YAML file, so that a
    run on the same data and model matches the recipe without experiment=."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from ftune import recipes
    from ftune.registry import register_configs

    register_configs()
    for name in names:
        GlobalHydra.instance().clear()
        with initialize_config_module("ftune.configs", version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={name}"])
        if not any(cfg.task.data.get(split) for split in ("train", "validation", "test")):
            print(f"recipe_search: {name} reads hub data: matched by experiment= only", file=sys.stderr)
            continue
        prints = recipes.data_fingerprints(cfg)
        path = REPO / "configs" / "experiment" / f"{name}.yaml"
        text, count = re.subn(r"(?m)^  fingerprints: .*$", "  fingerprints: {" + ", ".join(
            f"{k}: '{v}'" for k, v in prints.items()) + "}", path.read_text())
        if count != 1:
            sys.exit(f"recipe_search: {path} has no `  fingerprints:` line under recipe:")
        path.write_text(text)
        print(f"recipe_search: {name}: {prints}", file=sys.stderr)


def shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N with 0 <= I < N, e.g. 0/2 and 1/2")
    return int(index), int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--models", nargs="+", default=["minilm"])
    parser.add_argument("--lrs", nargs="+", type=float, help="default: three per model (LRS)")
    parser.add_argument("--warmup", nargs="+", type=float)
    parser.add_argument("--weight-decay", nargs="+", type=float)
    parser.add_argument("--epochs", nargs="+", type=int)
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="default: ftune's (trainer.batch_size)")
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--min-steps", nargs="+", type=int,
                        help="the step rule as an axis: trainer.min_steps values (epochs raised up to --max-epochs)")
    parser.add_argument("--max-epochs", type=int, default=10, help="trainer.max_epochs with --min-steps")
    parser.add_argument("--train-size", type=int, help="NER sentences / SST-2 rows to train on (default: the scale's)")
    parser.add_argument("--validation-size", type=int, help="NER sentences / SST-2 rows to validate on")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "recipes.latest.json")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "recipe_search",
                        help="run directories and derived data (SQuAD by article)")
    parser.add_argument("--keep-models", action="store_true", help="keep each run's best/ and checkpoints/")
    parser.add_argument("--shard", type=shard, metavar="I/N", help="run only every N-th run of the grid, from the I-th (0-based)")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="add the runs of these results files (e.g. the shards') to --out, then print the tables")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--prepare-data", action="store_true",
                        help="only write the SQuAD-by-article files of --scale (configs/experiment/squad_minilm.yaml reads them)")
    parser.add_argument("--write-fingerprints", nargs="+", metavar="EXPERIMENT",
                        help="compute the data fingerprints of these configs/experiment/ recipes into their files")
    parser.add_argument("extra", nargs="*", help="more ftune overrides for every run, e.g. trainer.precision=fp32")
    args = parser.parse_args()
    if args.write_fingerprints:
        os.chdir(REPO)  # the experiments' data paths are relative to the repository root
        write_fingerprints(args.write_fingerprints)
        return
    if args.merge:
        data = load(args.out)
        for path in args.merge:
            data["runs"].update(load(path)["runs"])
        save(args.out, data)
        args.table_only = True
    if args.table_only:
        data = load(args.out)
        if args.train_size:  # the tables of one data size (a gap table over every setting run at that size)
            data["runs"] = {k: r for k, r in data["runs"].items() if r["sizes"].get("train") == args.train_size}
        print(tables(data))
        return
    missing = [name for name in ("conll2003", "sst2", "squad_v1.1") if not (DATA / name).is_dir()]
    if missing:
        sys.exit(f"recipe_search: {DATA} lacks {', '.join(missing)} (see ../shared/data/README.md)")
    if args.prepare_data:
        scale = SCALES[args.scale]["qa"]
        print("\n".join(map(str, squad_by_article(args.work, scale["train_articles"], scale["validation_articles"]))))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    search(args)


if __name__ == "__main__":
    main()
