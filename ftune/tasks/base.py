"""The task plug-in interface: `Task`, the Protocol the engine, run.py and the commands are typed against, and
`TaskBase`, which every task inherits: the facts other parts read and the default of each optional hook. The
engine never imports a task module and never asks `hasattr`: a hook a task does not need keeps its default.

Examples are plain dicts and carry `where` ("file:line") for error messages. The engine adds "index" to
each batch (positions of its features). A batch, as returned by `collate`, is a dict with:
    "inputs":  tensors passed to the model as keyword arguments (moved to the device by the engine)
    "targets": tensors the task's `loss` needs (moved to the device too), may be empty
    "tokens":  number of real (non-padding) input tokens, for throughput figures
plus anything else the task wants to keep on the host (offsets, word ids, ...).

A task registers itself with its config schema: `@registry.task("name", NameTaskConfig)` on its class (see
docs/extending.md); its YAML is configs/task/<name>.yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # annotations only: composing a config imports this module, and need not load torch
    import torch


class Task(Protocol):
    name: str
    main_metric: str  # key of compute_metrics' result that selects the best checkpoint, e.g. "f1"
    greater_is_better: bool
    labels: list[str]
    pipeline_task: str | None  # transformers.pipeline task name that loads best/ (None where there is none)
    pipeline_tag: str
    auto_class: str
    card_example: str | None
    has_labels: bool
    generates: bool
    chat_input: str | None
    onnx_outputs: tuple[str, ...] | None
    gguf_export: bool
    table_columns: tuple[str, ...]
    scheme: str | None
    prompting: str | None
    explainable: bool  # hooks explain_targets / explain_words: TaskBase
    explain_output: str
    explain_texts: tuple[str, ...]
    stress_input: str | None
    pseudo_labels: bool  # hook pseudo_label: TaskBase

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Start-up checks across the keys of the task's config (ranges and choices are the schema's)."""

    def explain_targets(self, feature: dict, probabilities: Any, target: str | None) -> list[dict]:
        """`ftune explain`: what to attribute in one feature ({"label", "index", "positions"} each)."""

    def explain_prediction(self, probabilities: Any) -> dict | None:
        """`ftune explain`: the prediction a row shows before its explanations, or None."""

    def explain_words(self, example: dict, feature: dict, tokenizer: Any) -> tuple[list[str], list] | None:
        """`ftune explain`: (words, the word index of each token of `feature`), or None when unmatched."""

    def pseudo_label(self, examples: list[dict], predict: Any) -> tuple[list[dict], int]:
        """continual.pseudo_label: (examples filled in from an earlier model's `predict(inputs)`, items added)."""

    @classmethod
    def auto_peft_class(cls) -> str:
        """peft's AutoPeft class for an adapter folder."""

    def load_split(self, split: str) -> list[dict]:
        """Raw examples of a configured split (train | validation | test); [] when not configured."""

    def load_file(self, path: str) -> list[dict]:
        """Raw examples from a data file."""

    def iter_file(self, path: str, key: str = "file") -> Any:
        """The examples of a data file, possibly a generator (streamed); `key` names the config key in errors."""

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        """Examples for `predict` from raw input lines (text or JSON); `first_line`: the number of lines[0]."""

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

    def forward(self, model: Any, batch: dict) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(outputs or None, loss sum, targets) of a batch with targets, in training and evaluation."""

    def prepare(self, model: Any, features: dict[str, list[dict]], base_path: str, accelerator: Any) -> None:
        """Set-up once the model is built, before the first training step."""

    def train_stats(self) -> dict:
        """The task's own figures of the training steps since the last log line ("task/..." keys), or {}."""

    def generate(self, model: Any, batch: dict) -> list[Any]:
        """Only where `generates` is True: called by `Engine.infer` on every evaluation/prediction batch (the
        unwrapped model, inference mode); the result goes to batch["generated"] before `decode`. On batches
        without targets (predict) the forward pass is skipped and `decode` receives outputs=None."""

    def decode(self, outputs: Any, batch: dict) -> list[Any]:
        """Small per-feature predictions on the host (never whole logits), in batch order."""

    def compute_metrics(self, predictions: list[Any], features: list[dict], examples: list[dict]) -> dict:
        """Metrics of a split from its per-feature predictions; must contain `main_metric`."""

    def metric_state(self) -> Any:
        """An empty running state of the metric stream (`Engine.evaluate` feeds a split chunk by chunk)."""

    def update_metrics(self, state: Any, predictions: list[Any], features: list[dict], examples: list[dict],
                       first: int = 0) -> None:
        """Fold one chunk into `state`; `first` is the index of examples[0] in the split."""

    def final_metrics(self, state: Any) -> dict:
        """The metrics of the whole split from the state."""

    def format_predictions(self, predictions: list[Any], features: list[dict], examples: list[dict]) -> list[dict]:
        """One JSON-ready dict per example, for `predict`."""

    def metrics_table(self, metrics: dict) -> list[tuple]:
        """Rows (name, *values) for the console table; its value columns are the task's `table_columns`."""


# TaskBase's defaults are a text classifier's: a card for a model folder without a run names that task
DEFAULTS_TASK = "classification"


class TaskBase:
    """The facts every other part of ftune reads about a task, with their defaults. Each task class inherits it
    and overrides what differs: the card, ONNX/GGUF export, `serve`, `chat` and the report ask the task for
    these and never compare its name."""

    # the model card's metadata and usage example
    pipeline_tag: ClassVar[str] = "text-classification"  # hub pipeline tag of best/
    auto_class: ClassVar[str] = "AutoModelForSequenceClassification"  # the transformers class that loads best/
    pipeline_task: ClassVar[str | None] = None  # transformers.pipeline task that loads best/ (None: there is none)
    card_example: ClassVar[str | None] = None  # an input for the card's usage example (None: a generic sentence)
    # where `pipeline_task` is None: lines that predict once with `model`, `tokenizer` (None: from card_example)
    card_usage: ClassVar[tuple[str, ...] | None] = None
    # a line `ftune predict` reads (text or JSON): the conformance tests and docs feed it
    example_input: ClassVar[str] = "This is a short example text ."
    # what the model and its predictions are
    has_labels: ClassVar[bool] = True  # the model's config carries the label set (id2label)
    generates: ClassVar[bool] = False  # predictions are generated text (the task defines `generate`)
    chat_input: ClassVar[str | None] = None  # how chat/OpenAI routes feed a conversation: "messages" (the chat
    #                                          template over all turns), "last_user_message" (text-to-text), None
    onnx_outputs: ClassVar[tuple[str, ...] | None] = None  # the ONNX graph's named outputs (None: no ONNX export)
    gguf_export: ClassVar[bool] = False  # whether `format=gguf` applies
    table_columns: ClassVar[tuple[str, ...]] = ("precision", "recall", "f1", "support")  # metrics table columns
    # the tagging scheme fitted from the data (token tagging), part of the feature cache key; None: none
    scheme: str | None = None
    # how `ftune eval prompt=...` scores a causal LM on the task's data (ftune/prompted/): "choice" (one
    # verbalizer per label, by log-likelihood), "entities" (generated `type: span` lines), "answer" (a
    # generated span of the context); None: the task cannot be prompted
    prompting: ClassVar[str | None] = None
    # `ftune explain` (ftune/explain/) can attribute its predictions (hooks explain_targets, explain_words)
    explainable: ClassVar[bool] = False
    # what is explained of the model's output: "labels" (softmax of `.logits` over `labels`, per sequence or per
    # token), "independent_labels" (a sigmoid per label: multi-label), "value" (`.logits` as they are: a predicted
    # number), "span" (an answer span: start and end logits), "generation" (each generated token's
    # log-probability, teacher-forced); and the example fields the default `explain_words` encodes again to find words
    explain_output: ClassVar[str] = "labels"
    explain_texts: ClassVar[tuple[str, ...]] = ("text", "text_pair")
    # `ftune stress`: the shape of an example's input the perturbations edit: "text" (the strings `text` and
    # `text_pair`, label unchanged), "tagged_tokens" (`tokens` with `tags` aligned: entity swaps), None: none
    stress_input: ClassVar[str | None] = None
    # continual.pseudo_label: the hook `pseudo_label` fills in what new data leaves untagged (NER: earlier types)
    pseudo_labels: ClassVar[bool] = False

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Start-up checks across the keys of the task's config, before data or weights load (run.py; the schema
        checked each value alone). Raise FtuneError naming the key."""

    def iter_file(self, path: str, key: str = "file") -> Any:
        """Examples of a data file for `eval file=...`; a task that streams large files returns a generator."""
        return self.load_file(path)

    def forward(self, model: Any, batch: dict) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """One forward pass and the task's loss. A task that needs more than one pass (dpo: chosen, rejected and
        a reference model) overrides it, returns None as outputs and leaves in the batch what `decode` needs.
        The engine calls it in training (the prepared model: DDP-wrapped, autocast) and on evaluation batches
        with targets (inference mode)."""
        outputs = model(**batch["inputs"])
        return outputs, *self.loss(outputs, batch)

    def prepare(self, model: Any, features: dict[str, list[dict]], base_path: str, accelerator: Any) -> None:
        """Called by `train` once the model is built (None when resuming full fine-tuning), before the first
        step; dpo computes the reference log-probabilities there. Most tasks need nothing."""

    def train_stats(self) -> dict:
        """Figures of the task's own about the training steps since the last log line, merged into the engine's
        `train` event (metrics.jsonl, trackers, the plain console) and then reset; keys start with "task/".
        grpo reports its rewards, KL and completion lengths here; most tasks have none."""
        return {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        abstract = any(getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in dir(cls))
        if not abstract and cls.compute_metrics is TaskBase.compute_metrics and \
                cls.final_metrics is TaskBase.final_metrics:  # a base class of tasks (abc) may leave both
            raise TypeError(f"{cls.__name__} must define compute_metrics or final_metrics (each default calls the "
                            f"other)")

    # `generate(model, batch)` and `pseudo_label(examples, predict)` (see Task) have no default on purpose: a task
    # defines them with generates=True / pseudo_labels=True, and they are called only where those facts say so
    # (`train` refuses continual.pseudo_label at start-up otherwise).

    def compute_metrics(self, predictions: list[Any], features: list[dict], examples: list[dict]) -> dict:
        """Metrics of a whole split: the task's metric stream in one chunk. A task defines either this or the
        stream below (the stream's default calls this, so one of the two must be its own: checked when the
        class is defined, by __init_subclass__)."""
        state = self.metric_state()
        self.update_metrics(state, predictions, features, examples)
        return self.final_metrics(state)

    # The metric stream: `Engine.evaluate` feeds a split EVAL_CHUNK examples at a time, so a task that counts
    # (running sums) never holds a large split's predictions. The default keeps everything and calls
    # compute_metrics once at the end: right for any task, bounded only by the split's size.
    def metric_state(self) -> Any:
        return {"predictions": [], "features": [], "examples": []}

    def update_metrics(self, state: Any, predictions: list[Any], features: list[dict], examples: list[dict],
                       first: int = 0) -> None:
        state["predictions"].extend(predictions)  # chunks come in order: features keep their split-wide example
        state["features"].extend(features)
        state["examples"].extend(examples)

    def final_metrics(self, state: Any) -> dict:
        return self.compute_metrics(state["predictions"], state["features"], state["examples"])

    # ---- explaining (ftune/explain/): defaults are a sequence classifier's ------------------------------------
    def explain_targets(self, feature: dict, probabilities: Any, target: str | None) -> list[dict]:
        """What to attribute in one feature, given the model's probabilities ([labels] for a sequence, [tokens,
        labels] for tagging): a list of {"label", "index": label id (or one per position), "positions": the
        token positions whose probability is explained (None: the sequence's)}. Default: the predicted label,
        or `target` (a label name) when given."""
        from ftune.errors import FtuneError, did_you_mean

        if target is not None and target not in self.labels:
            raise FtuneError(f"target `{target}` is not a label of this model", where="explain.target",
                             fix=did_you_mean(target, self.labels) or f"choose from: {', '.join(self.labels)[:200]}")
        index = self.labels.index(target) if target is not None else int(probabilities.argmax())
        return [{"label": self.labels[index], "index": index, "positions": None}]

    def explain_prediction(self, probabilities: Any) -> dict | None:
        """The prediction an explained row starts with, from the explained output of one feature (see
        `explain_output`). Default: a sequence classifier's label and its probability; None for a label per
        token (tagging: the targets are the entities)."""
        if probabilities.dim() != 1:
            return None
        best = int(probabilities.argmax())
        return {"label": self.labels[best], "score": float(probabilities[best])}

    def explain_words(self, example: dict, feature: dict, tokenizer: Any) -> tuple[list[str], list] | None:
        """(words, the word index of each token of `feature`, None for special tokens), for summing token
        attributions into words; None when they cannot be matched. Default: `text` (and `text_pair`) encoded
        again with offsets (the fields of `explain_texts`), words as the tokenizer's pre-tokeniser splits them."""
        texts = [*(example.get(field) for field in self.explain_texts), None][:2]
        if not isinstance(texts[0], str) or not getattr(tokenizer, "is_fast", False):
            return None
        encoded = tokenizer(texts[0], texts[1], truncation=True, max_length=feature["length"],
                            return_offsets_mapping=True)
        if list(encoded["input_ids"]) != list(feature["input_ids"]):
            return None
        words, index, spans = [], [], {}
        for (start, end), seq, word in zip(encoded["offset_mapping"], encoded.sequence_ids(), encoded.word_ids(),
                                           strict=True):
            if seq is None or word is None:
                index.append(None)
                continue
            if (seq, word) not in spans:
                spans[(seq, word)] = [len(words), seq, start, end]
                words.append("")
            span = spans[(seq, word)]
            span[3] = max(span[3], end)
            words[span[0]] = texts[seq][span[2]:span[3]]
            index.append(span[0])
        return words, index

    @classmethod
    def auto_peft_class(cls) -> str:
        """peft's AutoPeft class for an adapter folder, e.g. AutoPeftModelForTokenClassification."""
        return "AutoPeft" + cls.auto_class.removeprefix("Auto")
