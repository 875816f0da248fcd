"""One inference object for eval, predict, chat, export and serve: loaded once from a run directory or a
model folder, it holds the task, tokenizer, model (adapter or merged), device, precision and the run's
settings, and predicts JSON in → JSON out (`predict_json`), the same for every command.

For tasks that generate (`task.generates`), it also owns generation: `prompt` turns a conversation or a
text into the token ids the task feeds its model (cut once, here, when too long), `generate` answers one
prompt, `generate_batch` answers several prompts together (serve), and `stream` yields the reply's text
while it is generated. `ftune chat`, `ftune serve` (its OpenAI routes) and the GGUF export's check all go
through them; nothing else calls `model.generate` for those paths. How the run's settings and model folder are found is in ftune/loading.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftune import loading, peft, provenance
from ftune.errors import FtuneError
from ftune.registry import build_task
from ftune.run_dir import RunDir, model_json

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
        run = RunDir.of(run_dir)  # the run's files are read through it only
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
            saved = run.config()
            task_cfg, warnings = loading.resolve_task(saved.task, cfg.get("task"), loading.given_task_keys())
            settings = OmegaConf.merge(saved, {"task": task_cfg})
        else:
            task_cfg = cfg.get("task")
            exported = model_json(Path(str(model_dir)), "ftune.json")  # written by `ftune export`
            if task_cfg is None and exported:
                task_cfg = OmegaConf.create(exported["task"])
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
            provenance.warn_if_trained_elsewhere(run)
        folder = loading.model_source(run, model_dir, cfg.get("checkpoint") or "best")
        if cfg.get("adapter"):  # one of the adapters a continual-learning run keeps by name
            if run is None:
                raise FtuneError("adapter= selects an adapter of a run", where="adapter", fix="add run_dir=<run>")
            folder = run.adapter(str(cfg.adapter))
        task = build_task(task_cfg)
        if runtime == "onnx":
            from ftune.export.onnx import load_onnx_model

            model, tokenizer = load_onnx_model(task, folder)
        else:
            tokenizer, model = loading.load_torch(task, folder, settings)
        return cls(task=task, tokenizer=tokenizer, model=model, folder=folder, run_dir=run_dir, settings=settings,
                   precision=precision, device=cfg.get("device") or "auto", batch_size=int(batch_size),
                   runtime=runtime, warnings=warnings)

    @property
    def run(self) -> RunDir | None:
        """The run directory this model came from, to read (None for a model folder)."""
        return RunDir(self.run_dir) if self.run_dir is not None else None

    @property
    def engine(self):
        """The engine in inference mode (no optimizer), built on first use."""
        if self._engine is None:
            from ftune.engine.device import make_accelerator
            from ftune.engine.loop import Engine
            from ftune.registry import defaults

            precision = "fp32" if self.runtime == "onnx" else self.precision
            accelerator, self.precision = make_accelerator(precision, self.device)
            trainer = OmegaConf.merge(defaults("trainer", "default"),
                                      self.settings.trainer if self.settings is not None else {},
                                      {"eval_batch_size": self.batch_size, "num_workers": 0, "compile": False})
            self._engine = Engine(self.model, self.task, trainer, accelerator)
        return self._engine

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
        results = self.run.results() if self.run is not None else {}
        task_cfg = self.task.cfg
        base = self.settings.model.name_or_path if self.settings is not None else None
        if base is None and peft.is_adapter_folder(self.folder):
            base = peft.base_model_path(self.folder)
        return {"task": self.task.name, "labels": list(self.task.labels),
                "base_model": base, "model": str(self.folder), "run_dir": str(self.run_dir) if self.run_dir else None,
                "max_length": task_cfg.get("max_length"), "runtime": self.runtime, "precision": self.precision,
                "metrics": {k: v for k, v in results.items() if k in ("validation", "test", "best_step")},
                "versions": results.get("versions") or provenance.versions()}

    # ---- generating (tasks with `generates`) ----------------------------------------------------------------
    @property
    def generative(self) -> bool:
        return bool(self.task.generates)

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt the run takes: a text-to-text task's source length, else its max_length."""
        cfg = self.task.cfg
        return cfg.max_source_length if self.task.chat_input == "last_user_message" else cfg.max_length

    def prompt(self, conversation: list[dict] | str, cut: bool = True) -> list[int]:
        """Token ids of a prompt as the task feeds its model: a conversation ([{role, content}], answered after
        its last user turn: the chat template, or the last user message for a text-to-text task) or a plain
        text (a completion). Over `max_prompt_tokens`: cut (a chat keeps its most recent tokens, a source its
        start, as in training), or with cut=False refused with PromptTooLong."""
        from ftune import replies

        return replies.prompt_ids(self, conversation, cut)

    def generate(self, prompt: list[int], settings: Any = None, min_tokens: int = 0,
                 on_text: Callable[[str], None] | None = None) -> dict:
        """One reply to a prompt, on this thread: {text, tokens, prompt_tokens, completion_tokens, finish_reason,
        created, id}. `settings` is a task's `generation` config (default: the run's); `on_text` receives the
        reply's text piece by piece as it is generated (the pieces join to `text`)."""
        from ftune import replies

        self._check_generative()
        model = self.engine.accelerator.unwrap_model(self.engine.model).eval()
        return replies.generate(model, self.tokenizer, prompt, settings or self.task.cfg.generation,
                                   min_tokens, on_text)

    def generate_batch(self, requests: list, more: Callable | None = None, on_done: Callable | None = None) -> list:
        """Several replies (replies.GenerationRequest: each with its own settings, seed, stop strings and `emit`
        for its pieces) decoded together, on this thread: one generate dict per request, or the exception that
        request alone raised. `more(active)` may add requests between steps; `on_done(request, result)` hears of
        each as soon as it is answered (ftune/generate_batch.py). `ftune serve` answers chat completions with it."""
        from ftune import generate_batch

        self._check_generative()
        model = self.engine.accelerator.unwrap_model(self.engine.model).eval()
        return generate_batch.generate_batch(model, self.tokenizer, requests, more, on_done)

    def stream(self, prompt: list[int], settings: Any = None, min_tokens: int = 0):
        """The reply's text pieces while they are generated (a worker thread runs `generate`); the iterator's
        `result` holds generate's dict once it is exhausted."""
        from ftune.replies import TextStream

        self._check_generative()
        return TextStream(lambda on_text: self.generate(prompt, settings, min_tokens, on_text))

    def _check_generative(self) -> None:
        if not self.generative:
            raise FtuneError(f"task={self.task.name} does not generate text", where="task",
                             fix="use a run of a generating task (e.g. task=sft or task=seq2seq)")


def as_line(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return json.dumps(item, ensure_ascii=False)
    raise FtuneError(f"an input must be a string or an object, got {type(item).__name__}", where="inputs")


