"""Tracker backends, selected by name in `logger.backends` (several at once). One module per backend;
each is imported only when chosen, so `ftune --help` never pays for mlflow (about 1 s) or wandb."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftune.errors import FtuneError, did_you_mean
from ftune.registry import LOGGERS


def check_backends(names: Any) -> list[str]:
    """The backend names, checked: an unknown or repeated name fails before anything is written."""
    names = [str(n) for n in (names or [])]
    for name in names:
        if name not in LOGGERS:
            hint = did_you_mean(name, LOGGERS)
            raise FtuneError(f"unknown logger backend `{name}`", where="logger.backends",
                             fix=f"{hint + ' ' if hint else ''}choose from: {', '.join(LOGGERS)} "
                                 "(e.g. logger.backends=[tensorboard,mlflow])")
    if len(set(names)) != len(names):
        raise FtuneError(f"a backend is listed twice: {names}", where="logger.backends", fix="list each once")
    return names


def build_trackers(logger_cfg: Any, run_dir: Path, cfg: Any) -> list:
    from ftune.loggers.base import run_info

    names = check_backends(logger_cfg.get("backends"))
    trackers: list = []
    if not names:
        return trackers
    try:
        for name in names:
            info = run_info(cfg, run_dir, logger_cfg)
            info.settings = logger_cfg.get(name) or {}
            trackers.append(LOGGERS[name].load()(info))
    except BaseException:
        for tracker in trackers:  # the ones already started end as failed, not left running
            tracker.close()
        raise
    return trackers
