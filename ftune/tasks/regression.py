"""Regression: one number per text or text pair (a sequence-classification head with one output, MSE).
Data, truncation and loss units as the other sequence-level tasks (ftune/tasks/classification.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
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
class RegressionTaskConfig:
    name: str = MISSING
    data: ClassificationDataConfig = section(ClassificationDataConfig)
    max_length: int = bounded(ge=4)


@registry.task("regression", RegressionTaskConfig)
class RegressionTask(SequenceTask):
    """One number per text (or pair), MSE loss. Main metric: Pearson's r (scale-free, as GLUE STS-B)."""

    name = "regression"
    main_metric = "pearson"
    problem_type = "regression"
    explainable, explain_output = True, "value"  # ftune explain: what raised or lowered the predicted number
    table_columns = ("pearson", "spearman", "mse", "examples")

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.labels = ["score"]  # one output, whatever the data: known before fit_labels (a loaded model has it)

    def parse_label(self, value: Any) -> float:
        return D.number(value)

    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        if not train:
            raise FtuneError("the training split is empty", where="task.data.train",
                             fix="point task.data.train at a non-empty CSV, TSV or JSONL file")
        self.labels = ["score"]  # one output; saved as id2label {0: "score"}

    def explain_targets(self, feature: dict, probabilities: Any, target: str | None) -> list[dict]:
        """The predicted number (attributions say which tokens raised or lowered it)."""
        if target is not None:
            raise FtuneError(f"a regression run has one output: target `{target}` cannot be chosen",
                             where="explain.target", fix="leave explain.target unset")
        return [{"label": "score", "index": 0, "positions": None}]

    def explain_prediction(self, probabilities: Any) -> dict:
        return {"value": float(probabilities[0])}

    def check_examples(self, examples: list[dict], split: str) -> None:
        pass  # targets were checked to be finite numbers when read

    def target(self, label: Any) -> float:
        return label

    def target_tensor(self, targets: list) -> torch.Tensor:
        return torch.tensor(targets, dtype=torch.float32)

    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["targets"]["labels"]
        total = F.mse_loss(outputs.logits.float().squeeze(-1), labels, reduction="sum")
        return total, torch.tensor(labels.numel(), device=labels.device)

    def decode(self, outputs: Any, batch: dict) -> list[float]:
        return outputs.logits.float().squeeze(-1).cpu().tolist()

    # Pearson and MSE could be running sums, but Spearman needs every value's rank in the whole split: the
    # state holds the gold and predicted numbers as float64 arrays (16 bytes per example, no Python objects),
    # and the metrics are computed from them exactly as from one list (identical to the last bit).
    def metric_state(self) -> dict:
        return {"gold": [], "predicted": []}

    def update_metrics(self, state: dict, predictions: list, features, examples, first: int = 0) -> None:
        gold, predicted = self._gold_and_predicted(predictions, features, examples, first)
        state["gold"].append(np.asarray(gold, dtype=np.float64))
        state["predicted"].append(np.asarray(predicted, dtype=np.float64))

    def final_metrics(self, state: dict) -> dict:
        gold, predicted = (np.concatenate(state[key]) if state[key] else np.zeros(0) for key in ("gold", "predicted"))
        return M.regression(gold, predicted)

    def metrics_table(self, metrics: dict) -> list[tuple]:
        return [("all", metrics["pearson"], metrics["spearman"], metrics["mse"], metrics["examples"])]

    def format_predictions(self, predictions: list, features: list[dict], examples: list[dict]) -> list[dict]:
        rows = [{} for _ in examples]
        for feature, score in zip(features, predictions, strict=True):
            rows[feature["example"]] = {**self._text(examples[feature["example"]]), "score": round(score, 6)}
        return self._with_errors(rows, examples)
