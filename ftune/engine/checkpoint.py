"""Checkpoints: checkpoints/step-N/ with weights, optimizer, scheduler, RNG and trainer state.

A checkpoint is written into a hidden temporary folder with a sha256 list of its files (written last),
flushed to disk, and renamed into place; the `latest` pointer is replaced after that. Resume takes the
newest checkpoint whose files match their checksums and skips, with a warning, any that do not.
Weights are safetensors; the other files are loaded with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ftune.errors import FtuneError

log = logging.getLogger("ftune")
STATE_FILE = "trainer_state.json"
CHECKSUMS = "checksums.json"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    chunk: int = 0  # optimizer steps done inside the current epoch: the data position
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations without improvement, for early stopping
    samples: int = 0
    last_eval_step: int = -1
    skipped: int = 0  # steps whose update was skipped: loss or gradients not finite (trainer.nonfinite=skip)


def staging(folder: Path, step: int) -> Path:
    """The hidden folder checkpoint `step` is written into before it is renamed into place."""
    return folder / f".tmp-step-{step}"


def start(folder: Path, step: int) -> Path:
    """An empty staging folder; one process makes it before any rank writes its share (optimizer shards)."""
    tmp = staging(folder, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save(folder: Path, model, optimizer_state: dict | None, scheduler, state: TrainState, keep_last: int,
         extras: list, weights: dict | None = None) -> Path:
    """Complete the staged checkpoint (see `start`), which is also a Hugging Face model folder.

    `weights` is the full state dict when the model is sharded (gathered by every rank beforehand, see
    ftune.engine.strategy); None saves the model's own parameters. `optimizer_state` None: every rank
    has written its own shard already. Only one process calls this.
    """
    final = folder / f"step-{state.step}"
    tmp = staging(folder, state.step)
    _save_pretrained(model, tmp, weights)
    for extra in extras:
        extra.save_pretrained(tmp)
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    # written last: a folder with a complete, matching checksum list is a complete checkpoint
    (tmp / CHECKSUMS).write_text(json.dumps(_checksums(tmp), indent=2))
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = folder / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, folder / "latest")
    _prune(folder, keep_last, keep=final)
    return final


def find(run_dir: Path, resume: str | bool) -> Path | None:
    """The checkpoint to resume from: `true` → latest complete one under run_dir, or an explicit path."""
    if resume is False or resume is None or str(resume).lower() in ("false", "none", ""):
        return None
    if str(resume).lower() not in ("true", "latest"):
        path = Path(str(resume))
        problem = verify(path)
        if problem:
            raise FtuneError(f"not a usable checkpoint: {path} ({problem})", where="resume",
                             fix="give a complete checkpoints/step-N folder, or resume=true for the latest good one")
        return path
    folder = run_dir / "checkpoints"
    # Newest first; anything incomplete or damaged (a kill during a save, a bad disk) is skipped, loudly.
    for candidate in sorted(folder.glob("step-*"), key=_step_of, reverse=True):
        problem = verify(candidate)
        if problem is None:
            return candidate
        log.warning("skipping checkpoint %s: %s", candidate, problem)
    raise FtuneError(f"no complete checkpoint to resume from in {folder}", where="resume",
                     fix="start without resume=true, or point run_dir at the interrupted run")


def verify(folder: Path) -> str | None:
    """Why `folder` is not a complete, intact checkpoint, or None."""
    listed = folder / CHECKSUMS
    if not listed.is_file():
        return "incomplete (no checksum list)"
    try:
        expected = json.loads(listed.read_text())
    except json.JSONDecodeError:
        return "damaged checksum list"
    actual = _checksums(folder)
    for name, digest in expected.items():
        if actual.get(name) != digest:
            return f"{name} is missing or does not match its checksum"
    return None


def load_training_state(path: Path, optimizer, scheduler, load_optimizer=None) -> TrainState:
    """Optimizer, scheduler, RNG and trainer state; `load_optimizer(path)` reads a sharded optimizer's files."""
    if load_optimizer is None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    else:
        load_optimizer(path)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    _set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return TrainState(**json.loads((path / STATE_FILE).read_text()))


def save_model_folder(target: Path, model, extras: list, weights: dict | None = None) -> None:
    """Write a Hugging Face model folder (weights, config, tokenizer) atomically: best/ is never half-written."""
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    _save_pretrained(model, tmp, weights)
    for extra in extras:
        extra.save_pretrained(tmp)
    _fsync_tree(tmp)
    old = target.with_name(f".old-{target.name}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def load_weights(model, folder: Path) -> None:
    """Load safetensors weights saved by `save_pretrained` into an existing model of the same shape
    (an adapter folder into a PeftModel)."""
    from safetensors.torch import load_file

    from ftune import peft

    if peft.is_adapter_folder(folder):
        peft.load_adapter_weights(model, folder)
        return

    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    if unexpected or set(missing) - tied:
        raise FtuneError(f"weights in {folder} do not fit the model (missing {list(missing)[:3]}, "
                         f"unexpected {list(unexpected)[:3]})", where="checkpoint")
    if missing:
        model.tie_weights()


def _save_pretrained(model, folder: Path, weights: dict | None) -> None:
    if weights is None:
        model.save_pretrained(folder)
    else:  # the gathered full state dict of a sharded model (peft picks the adapter's entries from it)
        model.save_pretrained(folder, state_dict=weights)


def _checksums(folder: Path) -> dict[str, str]:
    sums = {}
    for file in sorted(folder.iterdir()):
        if file.is_file() and file.name != CHECKSUMS:
            digest = hashlib.sha256()
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            sums[file.name] = digest.hexdigest()
    return sums


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = [name, keys.tolist(), pos, has_gauss, cached]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _prune(folder: Path, keep_last: int, keep: Path) -> None:
    steps = sorted((p for p in folder.glob("step-*") if p.is_dir()), key=_step_of)
    for old in steps[: max(0, len(steps) - max(keep_last, 1))]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
