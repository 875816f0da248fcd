"""Evaluation and prediction, the half of the Engine that runs without gradients: per-feature predictions
(decoded batch by batch into small host objects, gathered across processes) and a split's metrics through the
task's metric stream. `Engine` (loop.py) inherits it; it uses the engine's model, task, loader and strategy."""

from __future__ import annotations

from typing import Any

import torch

from ftune.data.batching import EVAL_CHUNK, eval_batches, example_chunks, feature_lengths
from ftune.engine import strategy as strategies


class Evaluation:
    """Mixed into Engine (which sets model, task, cfg, accelerator, strategy, device, _loader, _to_device and
    _forward): kept apart so that the training loop reads on its own."""

    def infer(self, features, batch_size: int) -> tuple[list[Any], float | None]:
        """Per-feature predictions (in feature order) and the mean loss over targets, if any."""
        predictions, loss_sum, count = self._infer(features, batch_size)
        return predictions, (loss_sum / count if count else None)

    @strategies.inference  # inference mode, or no_grad for a sharded model
    def _infer(self, features, batch_size: int) -> tuple[list[Any], float, float]:
        """Per-feature predictions (in feature order), the summed loss and the number of targets.

        Predictions are decoded batch by batch into small host objects: a split's logits are never held.
        Under several processes each rank runs every N-th batch and the decoded predictions are gathered
        by feature index, so every feature is predicted exactly once and every rank gets them all.
        """
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        # the bare module under DDP: its forward would sync buffers, a collective per batch, and ranks
        # may run one batch more or less than each other here
        model = self.accelerator.unwrap_model(self.model) if processes > 1 else self.model
        was_training = model.training
        model.eval()
        predictions: list[Any] = [None] * len(features)
        mine: list[tuple[int, Any]] = []
        loss_sum = torch.zeros((), device=self.device)
        targets = torch.zeros((), device=self.device)
        # generate(model, batch) → batch["generated"] for decode; without targets (predict) no forward pass
        generate = self.task.generate if self.task.generates else None
        every = eval_batches(feature_lengths(features), batch_size)
        batches = every[rank::processes]
        for n, batch in enumerate(self._loader(features, batches + self.strategy.eval_padding(batches, every))):
            batch = self._to_device(batch)
            if n >= len(batches):  # padding: the same passes, so every rank runs as many (FSDP's are collective)
                if batch["targets"]:
                    self._forward(model, batch)
                elif generate is None:
                    model(**batch["inputs"])
                if generate is not None:
                    generate(self.accelerator.unwrap_model(self.model), batch)
                continue
            outputs = None if batch["targets"] or generate is not None else model(**batch["inputs"])
            if batch["targets"]:
                outputs, batch_loss, batch_targets = self._forward(model, batch)
                loss_sum += batch_loss.float()
                targets += batch_targets
            if generate is not None:
                batch["generated"] = generate(self.accelerator.unwrap_model(self.model), batch)
            mine.extend(zip(batch["index"], self.task.decode(outputs, batch), strict=True))
        model.train(was_training)
        if processes > 1:
            from accelerate.utils import gather_object

            mine = gather_object(mine)
            loss_sum, targets = self.accelerator.reduce(loss_sum, "sum"), self.accelerator.reduce(targets, "sum")
        for index, prediction in mine:
            predictions[index] = prediction
        return predictions, loss_sum.item(), targets.item()

    def evaluate(self, features, examples) -> dict:
        """Metrics of a split, through the task's metric stream (metric_state / update_metrics / final_metrics):
        EVAL_CHUNK examples at a time, so a task that counts never holds a large split's predictions at once."""
        state, loss_sum, count = self.task.metric_state(), 0.0, 0.0
        for first, last, part in example_chunks(features, len(examples), EVAL_CHUNK):
            predictions, part_loss, part_count = self._infer(part, self.cfg.eval_batch_size)
            self.task.update_metrics(state, predictions, part, examples[first:last], first)
            loss_sum, count = loss_sum + part_loss, count + part_count
        metrics, loss = self.task.final_metrics(state), (loss_sum / count if count else None)
        if loss is not None:
            metrics["loss"] = loss
        return metrics
