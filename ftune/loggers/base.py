"""What every tracker backend shares: the run's description, the flattened config, the saved tracker ids.

A backend is a subscriber (called with each event dict, then `close()`), built with a `RunInfo`. Trackers
(tensorboard, mlflow, wandb) extend `Tracker`, which turns the engine's events into four calls:
`metrics(step, values)`, `saved(kind, step, path)`, `finish(results, files)` and `stop(status)`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("ftune")
IDS_FILE = "trackers.json"  # in the run directory: the tracker run ids a resumed run reattaches to
SKIPPED = ("step", "total_steps", "initial_step")  # event fields that are not metrics


@dataclass
class RunInfo:
    run_dir: Path
    config: dict  # the resolved config, nested
    params: dict[str, Any]  # flattened: dotted keys, long values cut (with a note)
    tags: dict[str, str]  # task, model, peft, freeze, sweep, job
    name: str  # <task>-<model>-<run folder> (a sweep's job: <sweep>-<job>)
    resume: bool  # resuming: reattach to the tracker run whose id is in trackers.json
    settings: Any = None  # the backend's own section of the logger config (logger.mlflow, logger.wandb)
    log_best: bool = False
    notes: list[str] = field(default_factory=list)

    def saved_id(self, backend: str) -> dict | None:
        """The ids recorded by an earlier start of this run, only when resuming it."""
        path = self.run_dir / IDS_FILE
        if not self.resume or not path.is_file():
            return None
        return json.loads(path.read_text()).get(backend)

    def save_id(self, backend: str, ids: dict) -> None:
        path = self.run_dir / IDS_FILE
        saved = json.loads(path.read_text()) if path.is_file() else {}
        saved[backend] = ids
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(saved, indent=2) + "\n")
        tmp.replace(path)


def flatten(config: dict, max_length: int = 500, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}. Lists and empty dicts become JSON text; a value longer than
    `max_length` characters is cut and says so (trackers cap params: MLflow at 6000 characters)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, max_length, f"{name}."))
            continue
        if isinstance(value, list | tuple | dict):
            value = json.dumps(value, default=str)
        if isinstance(value, str) and len(value) > max_length:
            note = f" … [cut: {len(value)} characters, full value in config.yaml]"
            value = value[: max(max_length - len(note), 0)] + note
        flat[name] = value
    return flat


def sweep_tags() -> dict[str, str]:
    """The sweep a Hydra multirun job belongs to (its folder) and its job number; {} for a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a dependency
        return {}
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hydra = HydraConfig.get()
    return {"sweep": str(Path(hydra.sweep.dir)), "job": str(hydra.job.num)}


def run_info(cfg: Any, run_dir: Path, logger_cfg: Any) -> RunInfo:
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    config["run_dir"] = str(run_dir)
    tags = {"task": str(_get(config, "task.name")), "model": str(_get(config, "model.name")),
            "peft": str(_get(config, "peft.name")), "freeze": str(_get(config, "freeze.name")), **sweep_tags()}
    if "sweep" in tags:
        name = f"{Path(tags['sweep']).name}-{tags['job']}"
    else:
        name = f"{tags['task']}-{tags['model']}-{run_dir.name}"
    resume = str(config.get("resume", False)).lower() not in ("false", "none", "")
    return RunInfo(run_dir=run_dir, config=config, params=flatten(config, logger_cfg.get("max_param_length", 500)),
                   tags=tags, name=name, resume=resume, log_best=bool(logger_cfg.get("log_best", False)))


def _get(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else {}
    return config if config != {} else None


def env(name: str, value: Any, default: Any = None) -> Any:
    """A config value when set, else the tracker's own environment variable, else the default."""
    return value if value not in (None, "") else os.environ.get(name) or default


def numbers(event: dict) -> dict[str, float]:
    return {k: float(v) for k, v in event.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in SKIPPED}


class Tracker:
    """Events → backend calls. On a resumed run the steps the tracker already holds are not sent again:
    resume is exact, so they would repeat the same values (and W&B refuses steps that go back)."""

    name = "tracker"

    def __init__(self, info: RunInfo):
        self.info = info
        # per event kind, the highest step the tracker run already holds (set by a backend that reattaches)
        self.last_step = {"train": -1, "eval": -1}
        self.status = "FAILED"  # until the final results arrive or the engine reports a signal
        self.errors = 0

    def __call__(self, event: dict) -> None:
        try:
            self._dispatch(event)
        except Exception as error:  # a tracker outage or refusal must not end a long training run
            self.errors += 1
            if self.errors == 1:
                log.warning("%s: %s: %s (training goes on; later %s errors are not shown)", self.name,
                            type(error).__name__, str(error).splitlines()[0][:300] if str(error) else "", self.name)

    def _dispatch(self, event: dict) -> None:
        kind = event["event"]
        if kind in ("train", "eval"):
            if event["step"] > self.last_step[kind]:
                self.metrics(event["step"], numbers(event))
        elif kind == "save":
            self.saved(event["kind"], event["step"], Path(event["path"]))
        elif kind == "result":
            self.status = "FINISHED"
            self.finish(event["results"], [Path(f) for f in event["files"]])
        elif kind == "end" and str(event.get("reason", "")).startswith("signal"):
            self.status = "KILLED"

    def close(self) -> None:
        try:
            self.stop(self.status)
        except Exception as error:
            log.warning("%s: could not close its run: %s", self.name, str(error).splitlines()[0][:300] if str(error) else error)

    # backends implement these
    def metrics(self, step: int, values: dict[str, float]) -> None: ...

    def saved(self, kind: str, step: int, path: Path) -> None: ...

    def finish(self, results: dict, files: list[Path]) -> None: ...

    def stop(self, status: str) -> None: ...


def final_metrics(results: dict) -> dict[str, float]:
    """results.json's split metrics as flat numbers: {"validation/f1": ..., "test/PER/f1": ...}."""
    flat: dict[str, float] = {}
    for split in ("validation", "test"):
        for key, value in flatten(results.get(split) or {}, 10**6).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                flat[f"{split}/{key.replace('.', '/')}"] = float(value)
    return flat
