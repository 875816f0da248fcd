"""Sequence-level tasks: one prediction per text, or per text pair, from a sequence-classification head.

    classification       one of K labels (softmax, cross-entropy; optional class weights)
    pair_classification  the same on text pairs, plus F1 of the positive class
    regression           one number (MSE): tasks/regression.py
    multilabel           any subset of K labels (sigmoid, binary cross-entropy, `threshold`): tasks/multilabel.py

Data are CSV/TSV files with a header line or JSONL, with configurable text/label columns, or a hub dataset.
Inputs longer than `max_length` tokens are truncated (pairs: longest first) and counted in a warning.
Loss units: every task counts examples, so the engine's loss is per example. Multi-label BCE is summed over
labels and divided by their number: the mean BCE per label, summed over the examples.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, choice, section
from ftune.config.tasks import ClassificationDataConfig
from ftune.data.batching import feature_column, pad
from ftune.data.readers import DataErrors
from ftune.errors import FtuneError
from ftune.tasks import sequence_data as D
from ftune.tasks import sequence_metrics as M
from ftune.tasks.base import TaskBase

log = logging.getLogger("ftune")


@dataclass
class ClassificationTaskConfig:
    name: str = MISSING
    data: ClassificationDataConfig = section(ClassificationDataConfig)
    max_length: int = bounded(ge=4)  # sub-word tokens, special tokens included; longer inputs are truncated (and counted)
    class_weights: str | None = choice(None, "auto")  # auto: inverse class frequency in train, in the training loss


@dataclass
class PairClassificationTaskConfig(ClassificationTaskConfig):
    positive_label: str | None = MISSING  # class of `positive_f1`; default: the second label of a binary task


class SequenceTask(TaskBase, abc.ABC):
    """What the four tasks share: data, label checks, tokenisation, batches and the model head."""

    name = "sequence"
    main_metric, greater_is_better = "accuracy", True
    pipeline_task = "text-classification"
    pipeline_tag = "text-classification"
    auto_class = "AutoModelForSequenceClassification"
    onnx_outputs = ("logits",)
    problem_type = "single_label_classification"
    stress_input = "text"

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.labels: list[str] = []
        self.data = D.SequenceData(cfg.data, self.name, self.parse_label)
        self.pair = self.data.pair
        self.pad_id, self.truncated = 0, 0

    @property
    def label_ids(self) -> dict[str, int]:
        if getattr(self, "_ids", (None,))[0] is not self.labels:  # labels are set by fit_labels or by eval
            self._ids = (self.labels, {label: i for i, label in enumerate(self.labels)})
        return self._ids[1]

    # ---- data ---------------------------------------------------------------------------------------
    def load_split(self, split: str) -> list[dict]:
        return self.data.split(split)

    def load_file(self, path: str, key: str = "file") -> list[dict]:
        return list(self.data.file(path, key))

    def iter_file(self, path: str, key: str = "file"):
        return self.data.file(path, key)

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        return self.data.inputs(lines)

    # ---- labels ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def parse_label(self, value: Any) -> Any:
        """The task's label from a raw cell or JSON value; ValueError says what is wrong with it."""

    def gold_labels(self, example: dict) -> list[str]:
        return [example["label"]]

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        if not train:
            raise FtuneError("the training split is empty", where="task.data.train",
                             fix="point task.data.train at a non-empty CSV, TSV or JSONL file")
        self.labels = D.sort_labels(D.distinct_labels(train), self.data.label_order)
        for split, examples in others.items():
            self.check_examples(examples, split)

    def check_examples(self, examples: list[dict], split: str) -> None:
        known, errors = set(self.labels), DataErrors(f"the {split} split")
        if D.distinct_labels(examples) <= known:  # on disk: one Arrow scan; rows are read only to locate problems
            return
        for ex in examples:
            for label in self.gold_labels(ex) if "label" in ex else []:
                if label not in known:
                    errors.add(ex["where"], f"label `{label}` does not occur in the training data")
        errors.raise_if_any(fix=f"labels known from training: {', '.join(self.labels)[:200]}")

    # ---- model and features ---------------------------------------------------------------------------
    def build_model(self, name_or_path: str, **kwargs: Any):
        from transformers import AutoModelForSequenceClassification

        from ftune.models import load_pretrained

        return load_pretrained(AutoModelForSequenceClassification, name_or_path, num_labels=len(self.labels),
                               id2label=dict(enumerate(self.labels)),
                               label2id={label: i for i, label in enumerate(self.labels)},
                               problem_type=self.problem_type, **kwargs)

    def bind_tokenizer(self, tokenizer: Any) -> None:
        self.pad_id = tokenizer.pad_token_id or 0

    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        limit = self.cfg.max_length
        if limit < tokenizer.num_special_tokens_to_add(pair=self.pair) + 2:
            raise FtuneError(f"max_length {limit} leaves no room for text", where="task.max_length")
        types = "token_type_ids" in tokenizer.model_input_names  # BERT yes; DistilBERT, RoBERTa no
        features, self.truncated = [], 0
        for start in range(0, len(examples), 1000):
            chunk = examples[start:start + 1000]
            texts = [ex["text"] for ex in chunk]
            pairs = [ex["text_pair"] for ex in chunk] if self.pair else None
            # One token over the limit tells which inputs are too long without encoding whole documents.
            encoded = tokenizer(texts, pairs, truncation=True, max_length=limit + 1)
            long = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) > limit]
            if long:
                again = tokenizer([texts[i] for i in long], [pairs[i] for i in long] if pairs else None,
                                  truncation=True, max_length=limit)
                for j, i in enumerate(long):
                    for key in again:
                        encoded[key][i] = again[key][j]
            self.truncated += len(long)
            for offset, ex in enumerate(chunk):
                feature = {"input_ids": encoded["input_ids"][offset], "example": start + offset,
                           "length": len(encoded["input_ids"][offset])}
                if types and "token_type_ids" in encoded:
                    feature["token_type_ids"] = encoded["token_type_ids"][offset]
                if "label" in ex:
                    feature["label"] = self.target(ex["label"])
                features.append(feature)
        if self.truncated:
            log.warning("%d of %d input(s) are longer than task.max_length=%d tokens and were truncated",
                        self.truncated, len(examples), limit)
        return features

    def target(self, label: Any) -> Any:
        return self.label_ids[label]

    def target_tensor(self, targets: list) -> torch.Tensor:
        return torch.tensor(targets, dtype=torch.long)

    def collate(self, features: list[dict]) -> dict:
        mask = torch.tensor(pad([[1] * f["length"] for f in features], 0))
        inputs = {"input_ids": torch.tensor(pad([f["input_ids"] for f in features], self.pad_id)),
                  "attention_mask": mask}
        if "token_type_ids" in features[0]:
            inputs["token_type_ids"] = torch.tensor(pad([f["token_type_ids"] for f in features], 0))
        labelled = all("label" in f for f in features)  # predict input has none
        targets = {"labels": self.target_tensor([f["label"] for f in features])} if labelled else {}
        return {"inputs": inputs, "targets": targets, "tokens": int(mask.sum())}

    def _text(self, example: dict) -> dict:
        return {"text": example["text"], "text_pair": example["text_pair"]} if self.pair else {"text": example["text"]}

    @staticmethod
    def _with_errors(rows: list[dict], examples: list[dict]) -> list[dict]:
        """Input lines that could not be read get {"error": ...} instead of a prediction."""
        return [{"error": ex["error"]} if "error" in ex else row for row, ex in zip(rows, examples, strict=True)]

    def _rounded(self, probabilities: list[float]) -> dict[str, float]:
        return {label: round(p, 4) for label, p in zip(self.labels, probabilities, strict=True)}

    # ---- metrics: counts (confusion matrix, per-label counts) or, for regression, the two columns, fed one
    # evaluation chunk at a time (Engine.evaluate), so a large split never holds all predictions and examples.
    def _gold_and_predicted(self, predictions: list, features, examples, first: int = 0):
        """Gold labels and predictions of examples[first:first + len(examples)] (one feature per example)."""
        labels = [ex["label"] for ex in examples]  # one Arrow read for a chunk on disk
        return [labels[i - first] for i in feature_column(features, "example").tolist()], predictions


@registry.task("classification", ClassificationTaskConfig)
class ClassificationTask(SequenceTask):
    """Single-label classification. Main metric: accuracy; class weights `auto` = N / (K · count(class))."""

    name = "classification"
    prompting = "choice"  # ftune eval prompt=...: a verbalizer per label (ftune/prompted/)
    explainable = True

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.class_weights: list[float] | None = None

    def parse_label(self, value: Any) -> str:
        return D.class_label(value)

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        super().fit_labels(train, others)
        if len(self.labels) < 2:
            raise FtuneError(f"the training data has a single label `{self.labels[0]}`", where="task.data.train",
                             fix="a classifier needs at least two classes in its training data")
        self.class_weights = None
        if self.cfg.class_weights == "auto":
            counts = D.label_counts(train)
            self.class_weights = [len(train) / (len(self.labels) * counts[label]) for label in self.labels]
            log.info("class weights: %s", ", ".join(f"{label} {weight:.3f}" for label, weight
                                                    in zip(self.labels, self.class_weights, strict=True)))
        elif self.cfg.class_weights is not None:
            raise FtuneError(f"unknown class_weights `{self.cfg.class_weights}`", where="task.class_weights",
                             fix="use auto (inverse class frequency) or null")

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = outputs.logits.float(), batch["targets"]["labels"]
        # Weights shape training only: evaluation reports the plain cross-entropy, comparable across runs.
        weights = self.class_weights if logits.requires_grad else None
        weight = torch.tensor(weights, device=logits.device) if weights else None
        total = F.cross_entropy(logits, labels, weight=weight, reduction="sum")
        return total, torch.tensor(labels.numel(), device=logits.device)

    def decode(self, outputs: Any, batch: dict) -> list[tuple[int, list[float]]]:
        probabilities = outputs.logits.float().softmax(-1).cpu()
        return [(int(row.argmax()), row.tolist()) for row in probabilities]

    def metric_state(self) -> dict:
        return {"matrix": np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)}

    def update_metrics(self, state: dict, predictions: list, features, examples, first: int = 0) -> None:
        gold, predicted = self._gold_and_predicted(predictions, features, examples, first)
        state["matrix"] += M.confusion([self.label_ids[g] for g in gold], [p for p, _ in predicted], len(self.labels))

    def final_metrics(self, state: dict) -> dict:
        return M.from_confusion(state["matrix"], self.labels)

    def metrics_table(self, metrics: dict) -> list[tuple]:
        rows = [(label, m["precision"], m["recall"], m["f1"], m["support"])
                for label, m in metrics["per_class"].items()]
        n, accuracy = metrics["examples"], metrics["accuracy"]
        return [*rows, ("macro avg", metrics["macro_precision"], metrics["macro_recall"], metrics["macro_f1"], n),
                ("micro avg (accuracy)", accuracy, accuracy, accuracy, n)]

    def format_predictions(self, predictions: list, features: list[dict], examples: list[dict]) -> list[dict]:
        rows = [{} for _ in examples]
        for feature, (best, probabilities) in zip(features, predictions, strict=True):
            rows[feature["example"]] = {**self._text(examples[feature["example"]]), "label": self.labels[best],
                                        "score": round(probabilities[best], 4),
                                        "probabilities": self._rounded(probabilities)}
        return self._with_errors(rows, examples)


@registry.task("pair_classification", PairClassificationTaskConfig)
class PairClassificationTask(ClassificationTask):
    """Classification of text pairs; adds `positive_f1`, the F1 of `positive_label` (binary: the second label)."""

    name = "pair_classification"
    example_input = "great film\tawful film"  # the two texts of a pair, tab-separated

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if not self.pair:
            raise FtuneError("pair_classification needs a second text column", where="task.data.text_pair_column",
                             fix="set task.data.text_pair_column=<column>")

    def positive_label(self) -> str | None:
        chosen = self.cfg.get("positive_label")
        if chosen is not None and str(chosen) not in self.labels:
            raise FtuneError(f"positive_label `{chosen}` is not a label ({', '.join(self.labels)})",
                             where="task.positive_label", fix="choose one of the labels, or null")
        return str(chosen) if chosen is not None else (self.labels[1] if len(self.labels) == 2 else None)

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        super().fit_labels(train, others)
        self.positive_label()

    def final_metrics(self, state: dict) -> dict:
        metrics = super().final_metrics(state)
        positive = self.positive_label()
        if positive is not None:
            metrics.update(positive_label=positive, positive_f1=M.one_class_f1_of(state["matrix"],
                                                                                  self.label_ids[positive]))
        return metrics
