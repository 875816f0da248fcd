"""Versions on record: what a run was trained (or evaluated) with, written into results.json and eval_<split>.json.

The same figures can differ across library releases (tokenisation, kernels, defaults), so eval and predict
warn in one line when the installed versions are not the ones a run was trained under.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ftune import __version__
from ftune.run_dir import RunDir

log = logging.getLogger("ftune")
PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers")
_CHECKOUT = Path(__file__).resolve().parents[1]


def versions() -> dict:
    """{"ftune", "git_commit" (a checkout only; "+dirty" with uncommitted changes), "python", "packages"}."""
    record = {"ftune": __version__, "git_commit": _git_commit(), "python": platform.python_version(), "packages": {}}
    for name in PACKAGES:
        try:
            record["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            record["packages"][name] = None
    return record


def differences(saved: dict | None) -> list[str]:
    """'transformers 5.23.0 → 5.24.0', ... for each recorded version that is not the installed one."""
    if not saved:
        return []
    now = versions()
    before_packages, now_packages = saved.get("packages", {}), now["packages"]
    found = [f"{name} {before_packages[name]} → {now_packages.get(name)}" for name in sorted(before_packages)
             if before_packages[name] != now_packages.get(name)]
    for key in ("ftune", "python"):
        if saved.get(key) and saved[key] != now[key]:
            found.insert(0, f"{key} {saved[key]} → {now[key]}")
    return found


def warn_if_trained_elsewhere(run: RunDir | None) -> None:
    """One warning line when the run's results.json records other versions than the installed ones."""
    saved = run.versions() if run is not None else None
    if saved is None:
        return
    found = differences(saved)
    if found:
        log.warning("the run was trained under other versions (%s): figures may differ slightly from training",
                    ", ".join(found))


def _git_commit() -> str | None:
    if not (_CHECKOUT / ".git").exists():  # an installed wheel: its version says it all
        return None
    try:
        commit = subprocess.run(["git", "-C", str(_CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(_CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")
