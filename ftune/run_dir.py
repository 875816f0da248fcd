"""The one reader of a run directory (what `ftune train` writes): config.yaml, results.json, metrics.jsonl,
.hydra/overrides.yaml, best/, checkpoints/step-N/, adapters/<name>/, the adapter files, eval_<split>.json.

Report, card, resume, sweep, provenance, export, eval and inference read a run through this class and never
open its files themselves, so the layout is written down once. It sits low in the layers (stdlib,
omegaconf, errors): anything above may take a RunDir. Each file is read when first asked for, then kept;
a missing file reads as empty (a run that was stopped or killed has no results.json), except `config()`,
which a command needs and refuses without.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftune.errors import FtuneError

CONFIG, RESULTS, METRICS, OVERRIDES = "config.yaml", "results.json", "metrics.jsonl", ".hydra/overrides.yaml"
ADAPTERS = "adapters"  # adapters/<name>/: one PEFT adapter per continual-learning stage
STEP = re.compile(r"step-(\d+)$")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:  # messages name the folder as the user gave it
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @classmethod
    def of(cls, path: str | Path | RunDir | None) -> RunDir | None:
        """A RunDir for a path (or the RunDir itself); None stays None."""
        return path if isinstance(path, RunDir) or path is None else cls(path)

    @property
    def is_run(self) -> bool:
        """The folder holds a run (its config.yaml): a run that was started, finished or not."""
        return (self.path / CONFIG).is_file()

    # ---- the run's settings -----------------------------------------------------------------------------
    def config(self) -> DictConfig:
        """The run's resolved config (config.yaml); a folder without one is refused (exit 2)."""
        if not self.is_run:
            raise FtuneError(f"{self.path} is not an ftune run (no config.yaml)", where="run_dir",
                             fix="pass the folder that `ftune train` created")
        return self._config.copy()  # callers may merge into it: the cached one stays as read

    @cached_property
    def _config(self) -> DictConfig:
        return OmegaConf.load(self.path / CONFIG)

    def config_dict(self) -> dict:
        """config.yaml as plain Python values; {} when the folder is no run."""
        return OmegaConf.to_container(self._config) if self.is_run else {}

    def setting(self, key: str, default: Any = None) -> Any:
        """One dotted key of config.yaml (e.g. model.quantization); `default` when absent or no run."""
        return OmegaConf.select(self._config, key, default=default) if self.is_run else default

    def overrides(self) -> list[str]:
        """The command line of `ftune train` (Hydra's overrides.yaml); [] when started from Python."""
        file = self.path / OVERRIDES
        return [str(o) for o in OmegaConf.load(file)] if file.is_file() else []

    @property
    def has_overrides(self) -> bool:
        return (self.path / OVERRIDES).is_file()

    # ---- what the run measured ----------------------------------------------------------------------------
    def results(self) -> dict:
        """results.json (metrics of best/, main metric, versions, timings); {} before the run finished."""
        return _json(self.path / RESULTS) or {}

    def versions(self) -> dict | None:
        """The package versions the run was trained under (results.json), None when unrecorded or unreadable."""
        try:
            return (_json(self.path / RESULTS) or {}).get("versions")
        except (json.JSONDecodeError, OSError):
            return None

    def metrics(self) -> list[dict]:
        """metrics.jsonl's events in order; a cut last line (a killed run) is skipped."""
        rows, file = [], self.path / METRICS
        if file.is_file():
            for line in file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        return rows

    @property
    def has_metrics(self) -> bool:
        return (self.path / METRICS).is_file()

    def eval_results(self, name: str) -> dict:
        """eval_<name>.json written by `ftune eval`; {} when absent."""
        return _json(self.path / f"eval_{name}.json") or {}

    def stress_results(self) -> dict:
        """{split: stress_<split>.json} written by `ftune stress`; {} when there is none."""
        found = {}
        for split in ("validation", "test"):
            data = _json(self.path / f"stress_{split}.json")
            if isinstance(data, dict):
                found[split] = data
        return found

    # ---- models -------------------------------------------------------------------------------------------
    @property
    def best(self) -> Path:
        return self.path / "best"

    def checkpoints(self) -> list[Path]:
        """The checkpoints/step-N/ folders, oldest first (the engine's checkpoint module decides which one is complete)."""
        found = [p for p in (self.path / "checkpoints").glob("step-*") if p.is_dir() and STEP.search(p.name)]
        return sorted(found, key=lambda p: int(STEP.search(p.name).group(1)))

    def adapter_names(self) -> list[str]:
        """The adapters kept by name in adapters/<name>/ (continual learning: one per stage)."""
        folder = self.path / ADAPTERS
        return sorted(p.name for p in folder.iterdir() if (p / "adapter_config.json").is_file()) \
            if folder.is_dir() else []

    def adapter(self, name: str) -> Path:
        """adapters/<name>/ for `adapter=<name>` (eval, predict, serve); an unknown name: one line, exit 2."""
        names = self.adapter_names()
        if name not in names:
            from ftune.errors import did_you_mean

            hint = did_you_mean(name, names)
            raise FtuneError(f"{self.path} has no adapter `{name}`", where="adapter",
                             fix=(f"{hint + ' ' if hint else ''}choose from: {', '.join(names)}" if names else
                                  "this run keeps no adapters by name (train with peft=lora continual.adapter=<name>)"))
        return self.path / ADAPTERS / name

    def file(self, *parts: str) -> Path:
        """A path inside the run (the report's PNGs, eval.log): for writing, or to hand to a tool."""
        return self.path.joinpath(*parts)


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def model_json(folder: Path, name: str) -> dict:
    """A JSON file of a model folder (config.json, base_config.json, ftune.json); {} when absent."""
    return _json(Path(folder) / name) or {}
