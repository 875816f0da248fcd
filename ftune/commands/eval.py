"""`ftune eval`: evaluate a run's model (or any model folder) on a split or a data file."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ftune import provenance
from ftune import run as R
from ftune.errors import CheckFailed, FtuneError
from ftune.inference import Inference
from ftune.run_dir import RunDir
from ftune.tasks.base import Task

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    from ftune import checks
    from ftune.data import cache, sources

    R.check_output_format(cfg.output_format)
    conditions = checks.parse(cfg.check) if cfg.check else []  # a malformed gate fails before any loading
    if cfg.split not in R.SPLITS:
        raise FtuneError(f"unknown split `{cfg.split}`", where="split", fix="choose from: train, validation, test")
    if cfg.run_dir and RunDir(cfg.run_dir).is_run:
        handler = logging.FileHandler(RunDir(cfg.run_dir).file("eval.log"))  # before loading: its warnings go there too
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    inference = Inference.load(cfg)
    task: Task = inference.task
    folder, run_dir = inference.folder, inference.run_dir
    if cfg.file:
        # streamed into a memory-mapped Arrow file, as a configured split (TaskBase.iter_file: a list)
        examples = sources.load_path(cfg.file, "file", task.iter_file)
        name = Path(cfg.file).stem
    else:
        examples, name = task.load_split(cfg.split), cfg.split
    if not examples:
        raise FtuneError(f"no examples to evaluate in split `{cfg.split}`", where="split",
                         fix="pick a configured split, or pass file=<data file>")
    task.check_examples(examples, name)
    metrics = inference.evaluate(examples, name, cfg.file or cache.local_source(task.cfg.data, cfg.split))
    gate = checks.evaluate(metrics, conditions)
    metrics.update(examples=len(examples), model=str(folder), split=name, max_length=task.cfg.get("max_length"),
                   versions=provenance.versions())
    if inference.warnings:
        metrics["differs_from_training"] = inference.warnings
    as_json = cfg.output_format == "json"
    R.print_table(task, metrics, f"{name} ({folder})", to_stderr=as_json)
    out_dir = run_dir if run_dir is not None else Path.cwd()
    R.write_json(out_dir / f"eval_{name}.json", metrics)
    log.info("wrote %s", out_dir / f"eval_{name}.json")
    if as_json:
        R.print_json({**metrics, "checks": gate} if gate else metrics)
    if not all(result["passed"] for result in gate):
        raise CheckFailed(checks.failure_line(gate))
    if gate:
        log.info("check passed: %s", ", ".join(f"{r['metric']} = {r['value']:.4f} ({r['check']})" for r in gate))
    return metrics
