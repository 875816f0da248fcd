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
    out = Path(cfg.out) if cfg.out else None
    if cfg.run_dir:
        run_dir = RunDir(cfg.run_dir)
        if not run_dir.has_metrics:
            raise FtuneError(f"{run_dir} has no metrics.jsonl", where="run_dir",
                             fix="pass the folder that `ftune train` created (runs/<task>/<model>/<time>)")
        path = report.write_run_report(run_dir, out)
    else:
        path = report.write_sweep_report(Path(cfg.sweep_dir), out, list(cfg.baselines or []))
    print(path, flush=True)  # stdout: the file, for scripts (open "$(ftune report run_dir=...)")
    log.info("report written: %s", path)
    return {"report": str(path)}
