"""Multi-label classification: any subset of K labels per text (sigmoid + binary cross-entropy summed over
labels and divided by their number). Data and truncation as the other sequence-level tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, section
from ftune.config.tasks import ClassificationDataConfig
from ftune.errors import FtuneError
from ftune.tasks import sequence_data as D
from ftune.tasks import sequence_metrics as M
from ftune.tasks.classification import SequenceTask


@dataclass
class MultilabelTaskConfig:
    name: str = MISSING
    data: ClassificationDataConfig = section(ClassificationDataConfig)
    max_length: int = bounded(ge=4)
    label_delimiter: str = MISSING  # splits a label cell such as "sports,politics" (a JSON list is read as such)
    threshold: float = bounded(gt=0, lt=1)  # a label is predicted when its sigmoid probability is at least this


@registry.task("multilabel", MultilabelTaskConfig)
class MultilabelTask(SequenceTask):
    """Any subset of labels per text: sigmoid + BCE, labels at probability ≥ `threshold`. Main metric: micro F1."""

    name = "multilabel"
    main_metric = "micro_f1"
    problem_type = "multi_label_classification"
    explainable, explain_output = True, "independent_labels"  # ftune explain: each predicted label's own probability

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if not 0 < cfg.threshold < 1:
            raise FtuneError(f"threshold must lie between 0 and 1, got {cfg.threshold}", where="task.threshold")

    def parse_label(self, value: Any) -> list[str]:
        return D.label_list(value, self.cfg.label_delimiter)

    def gold_labels(self, example: dict) -> list[str]:
        return example["label"]

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        super().fit_labels(train, others)
        if not self.labels:
            raise FtuneError("no example in the training data has a label", where="task.data.train",
                             fix=f"check task.data.label_column and task.label_delimiter=`{self.cfg.label_delimiter}`")

    def target(self, label: Any) -> list[int]:
        return [self.label_ids[name] for name in label]

    def target_tensor(self, targets: list) -> torch.Tensor:
        hot = torch.zeros(len(targets), len(self.labels))
        for row, ids in enumerate(targets):
            hot[row, ids] = 1.0
        return hot

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = outputs.logits.float(), batch["targets"]["labels"]
        total = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / logits.shape[-1]
        return total, torch.tensor(len(labels), device=logits.device)

    def decode(self, outputs: Any, batch: dict) -> list[list[float]]:
        return outputs.logits.float().sigmoid().cpu().tolist()

    def _chosen(self, probabilities: list[float]) -> list[int]:
        return [i for i, p in enumerate(probabilities) if p >= self.cfg.threshold]

    def explain_targets(self, feature: dict, probabilities: Any, target: str | None) -> list[dict]:
        """Each predicted label (sigmoid probability ≥ threshold), the most probable one when none is, or
        `target`: its own probability is explained, independent of the other labels'."""
        if target is not None:
            return super().explain_targets(feature, probabilities, target)
        chosen = self._chosen(probabilities.tolist()) or [int(probabilities.argmax())]
        return [{"label": self.labels[i], "index": i, "positions": None} for i in chosen]

    def explain_prediction(self, probabilities: Any) -> dict:
        return {"labels": {self.labels[i]: float(probabilities[i]) for i in self._chosen(probabilities.tolist())}}

    def metric_state(self) -> dict:
        return {}  # the counts of the first chunk start it

    def update_metrics(self, state: dict, predictions: list, features, examples, first: int = 0) -> None:
        gold, predicted = self._gold_and_predicted(predictions, features, examples, first)
        counts = M.label_counts([[self.label_ids[g] for g in labels] for labels in gold],
                                [self._chosen(p) for p in predicted], len(self.labels), state.get("counts"))
        state["counts"] = counts

    def final_metrics(self, state: dict) -> dict:
        return M.from_label_counts(state.get("counts") or M.label_counts([], [], len(self.labels)), self.labels)

    def metrics_table(self, metrics: dict) -> list[tuple]:
        rows = [(label, m["precision"], m["recall"], m["f1"], m["support"])
                for label, m in metrics["per_class"].items()]
        support = sum(m["support"] for m in metrics["per_class"].values())
        return [*rows, *((f"{kind} avg", metrics[f"{kind}_precision"], metrics[f"{kind}_recall"], metrics[f"{kind}_f1"],
                          support) for kind in ("micro", "macro"))]

    def format_predictions(self, predictions: list, features: list[dict], examples: list[dict]) -> list[dict]:
        rows = [{} for _ in examples]
        for feature, probabilities in zip(features, predictions, strict=True):
            rows[feature["example"]] = {**self._text(examples[feature["example"]]),
                                        "labels": [self.labels[i] for i in self._chosen(probabilities)],
                                        "probabilities": self._rounded(probabilities)}
        return self._with_errors(rows, examples)
