"""What `ftune train` does with the `continual` group (configs/continual/, docs/continual.md): start-up checks,
the label set of a run that starts from an earlier one, replay data, the regulariser's terms (and the Fisher file
of an earlier run), the adapters kept side by side, and the forgetting table of the earlier runs."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftune.continual import forgetting, heads
from ftune.errors import FtuneError
from ftune.run_dir import ADAPTERS, RunDir

log = logging.getLogger("ftune")
FISHER = "fisher.safetensors"  # in <earlier run>/continual/


def _active_peft(cfg: Any) -> bool:
    return str(cfg.peft.name) != "none"


def check(cfg: DictConfig, source: Any) -> list[RunDir]:
    """Start-up checks (config files only, before data or weights load); returns the `previous` runs."""
    settings, task = cfg.continual, cfg.task.name
    previous = []
    for i, path in enumerate(settings.previous):
        run = RunDir(str(path))
        key = f"continual.previous[{i}]"
        if not run.is_run:
            raise FtuneError(f"{path} is not an ftune run (no config.yaml)", where=key,
                             fix="list the run directories of the earlier stages")
        if run.setting("task.name") != task:
            raise FtuneError(f"{path} is a {run.setting('task.name')} run; this run is {task}: its metric cannot be "
                             "compared", where=key, fix="list earlier runs of the same task type")
        if not isinstance(run.results().get("validation"), dict):
            raise FtuneError(f"{path} has no validation results (unfinished, or trained without a validation split)",
                             where=key, fix="list finished runs that had a validation split")
        previous.append(run)
    if settings.every_eval and not previous:
        raise FtuneError("continual.every_eval evaluates the earlier runs at every evaluation: none are listed",
                         where="continual.every_eval", fix="add continual.previous=[<earlier run dirs>]")
    if settings.replay:
        replay = RunDir(str(settings.replay))
        if replay.is_run and replay.setting("task.name") != task:
            raise FtuneError(f"the replay run {settings.replay} is a {replay.setting('task.name')} run, this run is "
                             f"{task}", where="continual.replay", fix="replay data of the same task")
        if not replay.is_run and not Path(str(settings.replay)).expanduser().is_file():
            raise FtuneError(f"no data file or run at {settings.replay}", where="continual.replay",
                             fix="give an earlier training file, or the earlier run's directory")
    if settings.regularizer != "none" and _active_peft(cfg):
        raise FtuneError(f"continual.regularizer={settings.regularizer} anchors full fine-tuning; with peft="
                         f"{cfg.peft.name} train one adapter per stage instead", where="continual.regularizer",
                         fix="set continual.regularizer=none and continual.adapter=<name>")
    if settings.regularizer == "ewc":
        if source is None or source.run is None or source.adapter:
            raise FtuneError("EWC needs the earlier model and its data: start from an earlier run of full "
                             "fine-tuning", where="continual.regularizer",
                             fix="add init_from=<earlier run dir>, or use continual.regularizer=l2sp")
        if source.run.setting("task.name") != task and not settings.replay:
            raise FtuneError(f"EWC's Fisher needs earlier data of this task; {source.run} is a "
                             f"{source.run.setting('task.name')} run", where="continual.replay",
                             fix="give the earlier data with continual.replay=<file>")
    if settings.pseudo_label:
        _check_pseudo_label(cfg, source)
    if settings.adapter is not None:
        if not _active_peft(cfg):
            raise FtuneError("continual.adapter names a PEFT adapter; this run trains no adapter",
                             where="continual.adapter", fix="add peft=lora, or leave continual.adapter unset")
        names = {name for run in previous for name in _adapters_of(run)}
        if settings.adapter in names:
            raise FtuneError(f"adapter `{settings.adapter}` exists in an earlier run", where="continual.adapter",
                             fix="give this stage's adapter another name")
    for run in previous:
        if _active_peft(cfg) and run.setting("peft.name") != "none" and \
                str(run.setting("model.name_or_path")) != str(cfg.model.name_or_path):
            raise FtuneError(f"{run} trained its adapter on `{run.setting('model.name_or_path')}`, this run on "
                             f"`{cfg.model.name_or_path}`", where="continual.previous",
                             fix="adapters per stage share one base model: use the same model")
    return previous


def _check_pseudo_label(cfg: DictConfig, source: Any) -> None:
    from ftune.registry import task_class

    if not task_class(cfg.task.name).pseudo_labels:
        raise FtuneError(f"task {cfg.task.name} has no pseudo-labels (its examples leave no earlier label out)",
                         where="continual.pseudo_label", fix="set continual.pseudo_label=false")
    if source is None or source.run is None or source.run.setting("task.name") != cfg.task.name:
        raise FtuneError("pseudo-labels come from the earlier model: start from an earlier run of this task",
                         where="continual.pseudo_label", fix=f"add init_from=<earlier {cfg.task.name} run dir>")


def same_task_labels(source: Any, task: Any) -> list[str]:
    """The earlier model's labels when the run starts from a run of the same task (their ids are kept), else []."""
    if source is None or source.run is None or not task.has_labels or source.run.setting("task.name") != task.name:
        return []
    return list(source.labels)


def fit_labels(task: Any, splits: dict, old: list[str]) -> list[str]:
    """task.fit_labels, then (starting from a run of the same task) the union with the earlier labels, old ids
    first; the other splits are checked against the union. Returns the labels added to the earlier ones."""
    others = {k: v for k, v in splits.items() if k != "train"}
    if not old:
        task.fit_labels(splits["train"], others)
        return []
    task.fit_labels(splits["train"], {})
    labels = heads.union_labels(old, task.labels)
    if labels != task.labels:
        if getattr(task, "class_weights", None) is not None:
            raise FtuneError("class weights follow the training data's label order, which a label-set extension "
                             "changes", where="task.class_weights", fix="set task.class_weights=null")
        task.labels = labels
    for split, examples in others.items():
        if examples:
            task.check_examples(examples, split)
    added = labels[len(old):]
    if added:
        log.info("label set extended: %d earlier labels keep their ids, %d added (%s)", len(old), len(added),
                 ", ".join(added[:12]))
    return added


# ---- pseudo-labels -------------------------------------------------------------------------------------
def pseudo_label(cfg: DictConfig, task: Any, train: Any, source: Any) -> tuple[Any, dict | None]:
    """continual.pseudo_label: the earlier model (init_from) predicts the new training sentences, and the task
    writes what it found where the new annotation is silent (task.pseudo_label). Returns the training examples
    and {"entities": added, "examples": changed} for results.json (None when off)."""
    if not cfg.continual.pseudo_label:
        return train, None
    from ftune.inference import Inference

    started = time.perf_counter()
    earlier = Inference.load(OmegaConf.create({"run_dir": str(source.run.path), "checkpoint": str(source.folder),
                                               "device": cfg.trainer.device}))
    examples = list(train)

    def predict(inputs: list[dict]) -> list[dict]:  # in chunks: a large training set never makes one batch list
        return [row for start in range(0, len(inputs), 1024) for row in earlier.predict_batch(inputs[start:start + 1024])]

    labelled, added = task.pseudo_label(examples, predict)
    changed = sum(new is not old for new, old in zip(labelled, examples, strict=True))
    seconds = time.perf_counter() - started
    log.info("pseudo-labels: the earlier model's predictions added %d items to %d of %d training examples in "
             "%.0f s (continual.pseudo_label)", added, changed, len(examples), seconds)
    return labelled, {"added": added, "examples": changed, "of": len(examples), "from": str(source.folder),
                      "seconds": round(seconds, 1)}


# ---- replay -------------------------------------------------------------------------------------------
def _earlier_file(spec: str) -> str:
    """A data file, or an earlier run's training file."""
    run = RunDir(spec)
    return str(run.setting("task.data.train")) if run.is_run else spec


def replay_features(cfg: DictConfig, task: Any, tokenizer: Any):
    """The features of continual.replay (checked against this run's labels and scheme), or None."""
    if not cfg.continual.replay:
        return None
    from ftune.data import cache

    path = _earlier_file(str(cfg.continual.replay))
    examples = list(task.iter_file(path, "continual.replay"))
    if not examples:
        raise FtuneError(f"the replay data {path} holds no examples", where="continual.replay",
                         fix="give the earlier training file")
    task.check_examples(examples, "replay")  # another label set or tagging scheme: one line, exit 2
    return cache.featurize(task, examples, tokenizer, "replay", cfg.trainer.cache_features, path,
                           cfg.trainer.featurize_workers)


def mix_replay(cfg: DictConfig, train: Any, earlier: Any):
    from ftune.continual import replay

    if earlier is None:
        return train
    mixed, added = replay.mix(train, earlier, cfg.continual.replay_ratio, cfg.trainer.seed)
    log.info("replay: %d earlier features mixed into %d new ones (%.1f%%)", added, len(train),
             100 * added / max(len(mixed), 1))
    return mixed


# ---- adapters per stage -------------------------------------------------------------------------------


def own_adapter(run: RunDir) -> str:
    """The name a PEFT run's own adapter goes by: continual.adapter, else the run folder's name."""
    return str(run.setting("continual.adapter") or run.path.resolve().name)


def _adapters_of(run: RunDir) -> dict[str, Path]:
    """name → folder of the adapters a PEFT run holds: those under adapters/, else its best/ under its name."""
    if run.setting("peft.name", "none") == "none":
        return {}
    if run.adapter_names():
        return {name: run.adapter(name) for name in run.adapter_names()}
    return {own_adapter(run): run.best} if (run.best / "adapter_config.json").is_file() else {}


def save_adapters(cfg: DictConfig, run_dir: Path, previous: list[RunDir], copy: bool = True) -> dict[str, str]:
    """A PEFT run with continual.adapter: its best/ and the earlier stages' adapters, side by side in
    <run_dir>/adapters/<name>/ (copied byte for byte, by the main process: training this stage never touched
    them). Returns earlier run → the name of its own adapter here (the same on every process)."""
    if cfg.continual.adapter is None:
        return {}
    folder, names = Path(run_dir) / ADAPTERS, {}
    for run in previous:
        held = _adapters_of(run)
        for name, source in held.items():
            if copy and not (folder / name).exists():
                shutil.copytree(source, folder / name)
        if own_adapter(run) in held:
            names[str(run)] = own_adapter(run)
    if copy:
        target = folder / str(cfg.continual.adapter)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(run_dir) / "best", target)
        log.info("adapters side by side in %s: %s", folder, ", ".join(sorted(p.name for p in folder.iterdir())))
    return names


# ---- the forgetting table -----------------------------------------------------------------------------
def previous_validation(previous: list[RunDir], task: Any, adapters: bool) -> list[tuple[RunDir, Any]]:
    """Each earlier run's validation examples, read and checked against this run's labels at start-up (an
    earlier PEFT run whose adapter is kept is evaluated with its own labels: not checked here)."""
    from ftune.registry import build_task

    found = []
    for run in previous:
        examples = build_task(run.config().task).load_split("validation")
        if not (adapters and _adapters_of(run)):
            task.check_examples(examples, f"validation split of {run}")
        found.append((run, examples))
    return found


def watched(cfg: DictConfig, task: Any, tokenizer: Any, earlier: list[tuple[RunDir, Any]]) -> list[tuple]:
    """continual.every_eval: the earlier validation splits the engine evaluates at every evaluation as well
    (metrics.jsonl: previous<i>/<metric>); not those of earlier adapters this run keeps (they cannot change)."""
    if not cfg.continual.every_eval:
        return []
    kept = cfg.continual.adapter is not None
    return [(f"previous{i}", _earlier_features(cfg, task, tokenizer, i, run, examples), examples)
            for i, (run, examples) in enumerate(earlier) if not (kept and _adapters_of(run))]


def _earlier_features(cfg: DictConfig, task: Any, tokenizer: Any, i: int, run: RunDir, examples: Any):
    """The features of earlier run i's validation split, through the feature cache (keyed by its file)."""
    from ftune.data import cache

    return cache.featurize(task, examples, tokenizer, f"previous {i}", cfg.trainer.cache_features,
                           cache.local_source(run.config().task.data, "validation"), cfg.trainer.featurize_workers)


def forgetting_table(cfg: DictConfig, engine: Any, task: Any, tokenizer: Any, earlier: list[tuple[RunDir, Any]],
                     adapters: dict[str, str], run_dir: Path, main: bool = True) -> list[dict]:
    """One row per earlier run: its main metric on its validation split when trained and now. Now: this run's
    model (best/; every process evaluates, collectively), or, for an earlier PEFT stage whose adapter this run
    keeps, that adapter (evaluated by the main process alone)."""
    rows = []
    for i, (run, examples) in enumerate(earlier):
        metric = run.results().get("main_metric") or task.main_metric
        before = run.results()["validation"][metric]
        name = adapters.get(str(run))
        if name is not None and not main:
            continue
        if name is not None:
            from ftune.inference import Inference

            loaded = Inference.load(OmegaConf.create({"run_dir": str(run), "checkpoint":
                                                     str(Path(run_dir) / ADAPTERS / name)}))
            now = loaded.evaluate(examples, f"previous {i}")[metric]
        else:
            features = _earlier_features(cfg, task, tokenizer, i, run, examples)
            now = engine.evaluate(features, examples)[metric]
        rows.append(forgetting.row(str(run), str(run.setting("task.name")), metric, float(before), float(now), name,
                                   bool(run.results().get("greater_is_better", True))))
    return rows


def print_forgetting(rows: list[dict], to_stderr: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="forgetting (earlier runs' validation metric)", title_justify="left")
    for column in forgetting.HEADER:
        table.add_column(column, justify="left" if column in ("earlier run", "task", "metric") else "right")
    for values in forgetting.table_rows(rows):
        table.add_row(*(f"{v:+.4f}" if i == 5 else f"{v:.4f}" if isinstance(v, float) else str(v)
                        for i, v in enumerate(values)))
    Console(file=sys.stderr if to_stderr else sys.stdout, width=120).print(table)
