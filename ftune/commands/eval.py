"""`ftune eval`: evaluate a run's model (or any model folder) on a split or a data file."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ftune import provenance
from ftune import run as R
from ftune.errors import CheckFailed, FtuneError

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    from omegaconf import OmegaConf

    from ftune import checks
    from ftune.config import TrainerConfig
    from ftune.data import cache
    from ftune.engine.loop import Engine, make_accelerator

    R.check_output_format(cfg.output_format)
    conditions = checks.parse(cfg.check) if cfg.check else []  # a malformed gate fails before any loading
    if cfg.split not in R.SPLITS:
        raise FtuneError(f"unknown split `{cfg.split}`", where="split", fix="choose from: train, validation, test")
    task, tokenizer, model, trainer_cfg, run_dir, folder = R.load_inference(cfg)
    if run_dir is not None:
        handler = logging.FileHandler(run_dir / "eval.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    if cfg.file:
        examples, name = task.load_file(cfg.file, key="file"), Path(cfg.file).stem
    else:
        examples, name = task.load_split(cfg.split), cfg.split
    if not examples:
        raise FtuneError(f"no examples to evaluate in split `{cfg.split}`", where="split",
                         fix="pick a configured split, or pass file=<data file>")
    task.check_examples(examples, name)
    trainer_cfg = OmegaConf.merge(OmegaConf.structured(TrainerConfig), trainer_cfg or {},
                                  {"eval_batch_size": cfg.batch_size, "num_workers": 0})
    accelerator, _ = make_accelerator("auto", cfg.device)
    engine = Engine(model, task, trainer_cfg, accelerator)
    metrics = engine.evaluate(cache.featurize(task, examples, tokenizer, name, trainer_cfg.cache_features, cfg.file or
                                              cache.local_source(task.cfg.data, cfg.split), trainer_cfg.featurize_workers), examples)
    gate = checks.evaluate(metrics, conditions)
    metrics.update(examples=len(examples), model=str(folder), split=name, versions=provenance.versions())
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
