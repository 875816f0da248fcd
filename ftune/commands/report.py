"""`ftune report`: report.html of a run (run_dir=...) or a sweep (sweep_dir=...), redrawn from its files."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ftune.errors import FtuneError
from ftune.run_dir import RunDir

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    from ftune import report

    if bool(cfg.run_dir) == bool(cfg.sweep_dir):
        raise FtuneError("give one of run_dir or sweep_dir", where="run_dir" if cfg.run_dir else "sweep_dir",
                         fix="ftune report run_dir=runs/<task>/<model>/<time>, or sweep_dir=multirun/<time>")
    if cfg.explain and not cfg.run_dir:
        raise FtuneError("explain=N explains a run's validation examples", where="explain", fix="use it with run_dir=")
    out = Path(cfg.out) if cfg.out else None
    if cfg.run_dir:
        run_dir = RunDir(cfg.run_dir)
        if not run_dir.has_metrics:
            raise FtuneError(f"{run_dir} has no metrics.jsonl", where="run_dir",
                             fix="pass the folder that `ftune train` created (runs/<task>/<model>/<time>)")
        path = report.write_run_report(run_dir, out, _explained(cfg) if cfg.explain else None)
    else:
        path = report.write_sweep_report(Path(cfg.sweep_dir), out, list(cfg.baselines or []))
    print(path, flush=True)  # stdout: the file, for scripts (open "$(ftune report run_dir=...)")
    log.info("report written: %s", path)
    return {"report": str(path)}


def _explained(cfg: DictConfig) -> list[dict]:
    """`explain=N`: N validation examples of the run explained (the most confident errors first)."""
    from omegaconf import OmegaConf

    from ftune.explain.attribution import Explainer, Settings
    from ftune.explain.examples import explained_examples
    from ftune.inference import Inference

    inference = Inference.load(OmegaConf.create({"run_dir": cfg.run_dir, "checkpoint": "best", "device": cfg.device}))
    explainer = Explainer(inference, Settings(method=cfg.explain_method))
    split = inference.task.load_split("validation")
    if not len(split):
        raise FtuneError("the run has no validation split to explain", where="explain", fix="leave explain=0")
    rows = explained_examples(explainer, split, cfg.explain)
    log.info("explained %d validation example(s) with %s", len(rows), cfg.explain_method)
    return rows
