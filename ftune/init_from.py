"""`init_from=<run dir | model folder>`: start a run from the weights of an earlier run (or of any local model
folder) instead of the pretrained model alone, e.g. masked-LM pretraining on task text (task=mlm) and then
classification from that run.

The task's model is still built from `model.name_or_path` (its config, its tokenizer, a fresh head); then
its body (`model.base_model`: `bert`, `roberta`, `model`, ...) takes the source's weights. The head is taken
too only where `head_state` says it fits: the source is the same model class and has the same label set (or
the task has no labels: an LM head). A PEFT source (an adapter folder in a run) is merged first, its base
model rebuilt as its run built it, through that run's own init_from. `record` describes the chain for
results.json and the model card (whose base_model stays the original hub model).

Entry points: `resolve` + `check` at start-up (config.json only, before data or weights load), `load_into`
once the model is built (train, resume, and eval/predict of a PEFT run), `record` for results.json.
Extension point: `head_state` decides which head tensors are carried over (e.g. a label set that grows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftune.continual import heads
from ftune.errors import FtuneError
from ftune.run_dir import RunDir, model_json

log = logging.getLogger("ftune")
KEY = "init_from"
FIX = "start from a run or model folder of the same architecture and vocabulary as model.name_or_path"


@dataclass
class Source:
    given: str  # the value of init_from, as the user wrote it
    folder: Path  # the model folder: a run's best/, a checkpoint, or the folder given
    run: RunDir | None  # the run the folder belongs to, if any
    adapter: bool  # a PEFT adapter folder (merged into its base model when loaded)

    @property
    def config(self) -> dict:
        """config.json of the folder (base_config.json next to an adapter)."""
        return model_json(self.folder, "base_config.json" if self.adapter else "config.json")

    @property
    def labels(self) -> list[str]:
        id2label = self.config.get("id2label") or {}
        return [id2label[k] for k in sorted(id2label, key=int)]


def resolve(spec: str) -> Source:
    """The source named by init_from: a run directory (its best/), a folder inside a run (best/,
    checkpoints/step-N), or a model folder with config.json. Anything else: one line, exit 2."""
    from ftune.paths import resolve as resolve_path

    path = resolve_path(str(spec), KEY)
    if not path.is_dir():
        raise FtuneError(f"no run or model folder at {spec}", where=KEY,
                         fix="give the run directory of an earlier `ftune train`, or a model folder with config.json")
    run = RunDir(path) if RunDir(path).is_run else None
    folder = run.best if run is not None else path
    if run is None:  # best/ or checkpoints/step-N of a run
        for parent in (path.parent, path.parent.parent):
            if RunDir(parent).is_run:
                run = RunDir(parent)
                break
    adapter = (folder / "adapter_config.json").is_file()
    if not adapter and not (folder / "config.json").is_file():
        where = f"{run} has no best/ model (did it finish?)" if run is not None and folder == run.best else \
            f"no model in {folder} (no config.json)"
        raise FtuneError(where, where=KEY, fix="give a finished run or a model folder with config.json")
    if adapter and run is None:
        raise FtuneError(f"{folder} is a PEFT adapter outside a run: its base model is unknown", where=KEY,
                         fix="merge it first (ftune export merge=true) and give that folder")
    return Source(str(spec), folder, run, adapter)


def check(source: Source, cfg: Any) -> None:
    """Start-up checks against the configured model, from config files alone: same architecture, same
    vocabulary, and (a run) the same pretrained model, so the tokenizer and the card's base_model hold."""
    from transformers import AutoConfig

    if source.run is not None:
        theirs = str(source.run.setting("model.name_or_path", ""))
        ours = str(cfg.model.name_or_path)
        if theirs and theirs != ours and _resolved(theirs) != _resolved(ours):
            raise FtuneError(f"{source.run} was trained from `{theirs}`, this run's model is `{ours}`", where=KEY,
                             fix=f"add model.name_or_path={theirs}: the same base model and tokenizer")
    if cfg.model.get("quantization"):
        raise FtuneError("init_from does not load into a quantised base model", where=KEY,
                         fix="set model.quantization=null (LoRA on the full-precision model) or drop init_from")
    try:
        ours = AutoConfig.from_pretrained(str(_resolved(str(cfg.model.name_or_path)))).to_dict()
    except Exception:  # a hub id offline, GGUF: the model loader reports those; load_into checks the tensors
        return
    theirs = source.config
    if theirs.get("model_type") != ours.get("model_type"):
        raise FtuneError(f"{source.given} is a {theirs.get('model_type')} model, model.name_or_path is a "
                         f"{ours.get('model_type')} model", where=KEY, fix=FIX)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "d_model", "num_layers"):
        if key in theirs and key in ours and theirs[key] != ours[key]:
            what = "vocabulary" if key == "vocab_size" else "architecture"
            raise FtuneError(f"{what} mismatch: {source.given} has {key}={theirs[key]}, model.name_or_path has "
                             f"{key}={ours[key]}", where=KEY, fix=FIX)


def _resolved(name: str) -> Path | str:
    from ftune.paths import resolve as resolve_path

    try:
        path = resolve_path(name)
    except FtuneError:
        return name
    return path.resolve() if path.exists() else name


def load_into(model: Any, source: Source, labels: list[str], has_labels: bool) -> str:
    """Copy the source's body weights into `model` (a task model built from model.name_or_path), and its head
    where `head_state` allows; returns "kept" or "fresh" (the head). Mismatching tensors: one line, exit 2."""
    state, source_class = source_state(source)
    prefix = model.base_model_prefix
    has_body = bool(prefix) and hasattr(model, prefix) and getattr(model, prefix) is not model
    target = model.state_dict()
    body = [k for k in target if not has_body or k.startswith(prefix + ".")]
    required = {name for name, _ in model.named_parameters()}  # tied copies appear once; buffers are optional
    embeddings = next((n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight), None)
    chosen, missing = {}, []
    for key in body:
        found = next((k for k in (key, key.removeprefix(prefix + ".")) if k in state), None)
        if found is None:
            if key in required:
                missing.append(key)
            continue
        if tuple(state[found].shape) != tuple(target[key].shape):
            what = "vocabulary" if key == embeddings else "architecture"
            raise FtuneError(f"{what} mismatch: {key} is {tuple(state[found].shape)} in {source.given}, "
                             f"{tuple(target[key].shape)} in this model", where=KEY, fix=FIX)
        chosen[key] = state[found]
    if len(missing) * 2 > len(body) or not chosen:
        raise FtuneError(f"{source.given} does not hold this model's weights ({len(missing)} of {len(body)} body "
                         f"tensors missing, e.g. {missing[0]})", where=KEY, fix=FIX)
    if missing:  # a module the source's class lacks (BERT's pooler after masked-LM or token tagging)
        log.info("init_from: %d tensor(s) not in %s keep model.name_or_path's values: %s", len(missing),
                    source.given, ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""))
    head = head_state(model, state, source_class, source.labels, labels, has_labels, set(body))
    chosen.update(head)
    model.load_state_dict(chosen, strict=False)
    kept = ("extended" if has_labels and heads.grows(source.labels, list(labels)) else "kept") if head else "fresh"
    log.info("init_from %s: %d body tensors loaded, head %s", source.given, len(chosen) - len(head), kept)
    return kept


def head_state(model: Any, state: dict, source_class: str | None, source_labels: list[str], labels: list[str],
               has_labels: bool, body: set[str]) -> dict:
    """The head tensors to take from the source: all of them where the source is the same model class and (a
    task with labels) has the same labels in the same order, shapes equal; where the labels grew from the source's
    (continual learning: the old labels first, in order), the old rows copied into the fresh head
    (ftune/continual/heads.py); else none (the head stays fresh)."""
    if source_class != type(model).__name__:
        return {}
    target = model.state_dict()
    if has_labels and heads.grows(source_labels, list(labels)):  # label-set extension: old rows copied as they are
        return heads.grown_state(target, state, source_labels, list(labels), body)
    if has_labels and source_labels != list(labels):
        return {}
    return {k: state[k] for k in target if k not in body and k in state and state[k].shape == target[k].shape}


def head_kept(model: Any, source: Source, labels: list[str], has_labels: bool, task_name: str) -> str:
    """What `load_into` decided about the head, without loading (a resumed run: its checkpoint holds the
    weights); an adapter source's class is judged by its run's task."""
    if source.adapter:
        same = source.run.setting("task.name") == task_name
    else:
        same = (source.config.get("architectures") or [None])[0] == type(model).__name__
    if same and has_labels and heads.grows(source.labels, list(labels)):
        return "extended"
    return "kept" if same and (not has_labels or source.labels == list(labels)) else "fresh"


def source_state(source: Source) -> tuple[dict, str | None]:
    """The source model's full state dict and its class name; an adapter is merged into its base first."""
    if not source.adapter:
        from safetensors.torch import load_file

        files = sorted(source.folder.glob("*.safetensors"))
        if not files:
            raise FtuneError(f"{source.folder} holds no safetensors weights", where=KEY,
                             fix="give a folder saved with safetensors (save_pretrained's default)")
        state: dict = {}
        for file in files:
            state.update(load_file(str(file)))
        return state, (source.config.get("architectures") or [None])[0]
    return _merged_adapter(source)


def _merged_adapter(source: Source) -> tuple[dict, str]:
    """A PEFT run's adapter on its base model, merged: the base rebuilt as the run built it (its task, its
    labels, its own init_from), as `ftune export merge=true` would."""
    from ftune import peft
    from ftune.models import locate
    from ftune.registry import build_task

    cfg = source.run.config()
    task = build_task(cfg.task)
    if task.has_labels:
        task.labels = source.labels
    base = task.build_model(locate(str(cfg.model.name_or_path)), trust_remote_code=cfg.model.trust_remote_code)
    if cfg.get(KEY):
        load_into(base, resolve(cfg[KEY]), task.labels, task.has_labels)
    model = peft.merge(peft.load_trained(base, source.folder), peft.adapter_method(source.folder))
    return model.state_dict(), type(model).__name__


def record(source: Source, head: str) -> dict:
    """What results.json keeps: the folder, its run (task, model), the head, and the source's own chain."""
    entry: dict = {"path": str(source.folder), "run": str(source.run) if source.run else None, "head": head,
                   "adapter": source.adapter}
    if source.run is not None:
        entry.update(task=source.run.setting("task.name"), model=source.run.setting("model.name_or_path"))
        earlier = source.run.results().get(KEY)
        if earlier:
            entry["from"] = earlier
    return entry


def chain(entry: dict | None) -> list[dict]:
    """The records of a results.json's init_from, newest first (the run it started from, then that run's)."""
    found = []
    while isinstance(entry, dict):
        found.append(entry)
        entry = entry.get("from")
    return found


def describe(entry: dict | None) -> str | None:
    """One sentence for the model card: which runs the weights went through, newest first."""
    steps = chain(entry)
    if not steps:
        return None
    parts = [f"run `{e['run']}` (task {e.get('task')})" if e.get("run") else f"the model folder `{e['path']}`"
             for e in steps]
    head = {"kept": "its head taken too", "extended": "its head grown to the new labels (old rows kept)"}.get(
        steps[0].get("head"), "with a freshly initialised head")
    return f"Initialised from {' ← '.join(parts)}, {head} (init_from)."
