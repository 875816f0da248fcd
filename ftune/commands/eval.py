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
    if cfg.get("prompt") is not None:  # a causal LM prompted on the task's data (ftune/prompted/)
        from ftune import prompted

        task, metrics, name, folder = prompted.evaluate(cfg)
        metrics.update(examples=metrics["prompt"]["items"], model=str(folder), split=name, versions=provenance.versions())
        return _report(cfg, task, metrics, name, folder, None, conditions)
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
    metrics.update(examples=len(examples), model=str(folder), split=name, max_length=task.cfg.get("max_length"),
                   versions=provenance.versions())
    if inference.warnings:
        metrics["differs_from_training"] = inference.warnings
    return _report(cfg, task, metrics, name, folder, run_dir, conditions)


def _report(cfg: DictConfig, task: Task, metrics: dict, name: str, folder: Path, run_dir: Path | None,
            conditions: list) -> dict:
    """The table, eval_<name>.json (in the run, else the current directory) and the metric gate."""
    from ftune import checks

    gate = checks.evaluate(metrics, conditions)
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
