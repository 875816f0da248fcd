"""The task plug-in interface. The engine calls only these methods and never imports a task module.

Examples are plain dicts and carry `where` ("file:line") for error messages. The engine adds "index" to
each batch (positions of its features). A batch, as returned by `collate`, is a dict with:
    "inputs":  tensors passed to the model as keyword arguments (moved to the device by the engine)
    "targets": tensors the task's `loss` needs (moved to the device too), may be empty
    "tokens":  number of real (non-padding) input tokens, for throughput figures
plus anything else the task wants to keep on the host (offsets, word ids, ...).

Optional hook for generative tasks: `generate(model, batch) -> list` (one item per feature). When a task
defines it, `Engine.infer` calls it on every evaluation/prediction batch (unwrapped model, inference mode)
and stores the result in batch["generated"] before calling `decode`; on batches without targets (predict)
the forward pass is skipped and `decode` receives outputs=None.

Optional hook for tasks that need more than one forward pass: `forward(model, batch) -> (loss sum,
targets)`. When a task defines it, the engine calls it instead of `model(**batch["inputs"])` + `loss` in
training (the prepared model: DDP-wrapped under several processes, autocast as configured; gradients flow
from the returned sum) and on evaluation batches with targets (inference mode); `decode` then receives
outputs=None, so the hook leaves what decode needs in the batch. task=dpo runs chosen and rejected replies in
one pass and a reference model (the PEFT base with its adapter disabled, or precomputed log-probabilities).

Optional set-up hook: `prepare(model, features, base_path, accelerator)`, called by `train` once the model
is built and before the first step (dpo computes the reference log-probabilities of full fine-tuning there).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch


class Task(Protocol):
    name: str
    main_metric: str  # key of compute_metrics' result that selects the best checkpoint, e.g. "f1"
    greater_is_better: bool
    labels: list[str]
    pipeline_task: str | None  # transformers.pipeline task name that loads best/ (None where there is none)

    def load_split(self, split: str) -> list[dict]:
        """Raw examples of a configured split (train | validation | test); [] when not configured."""

    def load_file(self, path: str) -> list[dict]:
        """Raw examples from a data file."""

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        """Examples for `predict` from raw input lines (plain text or JSON); `first_line` is the number of
        lines[0] in the whole input (predict reads it in chunks), for tasks that number their inputs."""

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        """Set `labels` from the training examples and check the other splits against them."""

    def check_examples(self, examples: list[dict], split: str) -> None:
        """Validate examples against the labels of an already trained model (eval), with file:line errors."""

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        """A transformers model with this task's head, sized for `labels`."""

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Keep what `collate` needs from the tokenizer (pad id, special tokens); also called on a cache hit."""

    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        """Model-ready features; one example may give several (windows). Each has `example` and `length`."""

    def collate(self, features: list[dict]) -> dict:
        """A padded batch (see the module docstring)."""

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of per-target losses, number of targets): the engine normalises over a whole optimizer step."""

    def decode(self, outputs: Any, batch: dict) -> list[Any]:
        """Small per-feature predictions on the host (never whole logits), in batch order."""

    def compute_metrics(self, predictions: list[Any], features: list[dict], examples: list[dict]) -> dict:
        """Metrics of a split from its per-feature predictions; must contain `main_metric`."""

    def format_predictions(self, predictions: list[Any], features: list[dict], examples: list[dict]) -> list[dict]:
        """One JSON-ready dict per example, for `predict`."""

    def metrics_table(self, metrics: dict) -> list[tuple]:
        """Rows (name, *values) for the console table; the value columns are the task's `table_columns`
        attribute when it has one, else (precision, recall, f1, support)."""


class TaskBase:
    """The facts every other part of ftune reads about a task, with their defaults. Each task class inherits it
    and overrides what differs: the card, ONNX/GGUF export, `serve`, `chat` and the report ask the task for
    these and never compare its name."""

    # the model card's metadata and usage example
    pipeline_tag: ClassVar[str] = "text-classification"  # hub pipeline tag of best/
    auto_class: ClassVar[str] = "AutoModelForSequenceClassification"  # the transformers class that loads best/
    pipeline_task: ClassVar[str | None] = None  # transformers.pipeline task that loads best/ (None: there is none)
    card_example: ClassVar[str | None] = None  # an input for the card's usage example (None: a generic sentence)
    # what the model and its predictions are
    has_labels: ClassVar[bool] = True  # the model's config carries the label set (id2label)
    generates: ClassVar[bool] = False  # predictions are generated text (the task defines `generate`)
    chat_input: ClassVar[str | None] = None  # how chat/OpenAI routes feed a conversation: "messages" (the chat
    #                                          template over all turns), "last_user_message" (text-to-text), None
    # exports: the ONNX graph's named outputs (None: no ONNX export); whether `format=gguf` applies
    onnx_outputs: ClassVar[tuple[str, ...] | None] = None
    gguf_export: ClassVar[bool] = False
    # the console/report metrics table's value columns
    table_columns: ClassVar[tuple[str, ...]] = ("precision", "recall", "f1", "support")

    @classmethod
    def auto_peft_class(cls) -> str:
        """peft's AutoPeft class for an adapter folder, e.g. AutoPeftModelForTokenClassification."""
        return "AutoPeft" + cls.auto_class.removeprefix("Auto")
