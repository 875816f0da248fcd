"""Relation extraction: classify the relation between two marked entities of a sentence.

Input (JSONL, one example per line), entities by character offsets [start, end) or token indices:
    {"text": "Bill Gates founded Microsoft .", "head": [0, 10], "tail": [19, 28], "label": "founded"}
    {"tokens": ["Bill", "Gates", "founded", "Microsoft", "."], "head": [0, 2], "tail": [3, 4], "label": ...}
The task inserts marker tokens around the entities ("[E1] Bill Gates [/E1] founded [E2] Microsoft [/E2] ."),
adds the markers to the tokenizer as special tokens and resizes the model's embeddings. A sentence too
long for `max_length` is cropped around its entities, so the markers are never truncated away. Metrics:
classification metrics plus micro P/R/F1 over the relations other than `no_relation` (the main metric).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, choice, section
from ftune.config.tasks import DataSourceConfig
from ftune.data import sources
from ftune.data.readers import checked, iter_jsonl
from ftune.errors import FtuneError
from ftune.tasks import sequence_data as D
from ftune.tasks.classification import ClassificationTask

log = logging.getLogger("ftune")
MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")


@dataclass
class RelationDataConfig(DataSourceConfig):
    """JSONL: {"text", "head": [start, end), "tail": [start, end), "label"} (character offsets), or
    {"tokens", "head", "tail", "label"} with token indices."""

    format: str = choice("jsonl")
    text_column: str = MISSING
    label_column: str = MISSING
    head_field: str = MISSING
    tail_field: str = MISSING


@dataclass
class RelationTaskConfig:
    name: str = MISSING
    data: RelationDataConfig = section(RelationDataConfig)
    max_length: int = bounded(ge=8)  # longer sentences are cropped around their two entities
    class_weights: str | None = choice(None, "auto")
    no_relation: str | None = MISSING  # left out of the micro P/R/F1 (null: count every label)


@registry.task("relation", RelationTaskConfig)
class RelationTask(ClassificationTask):
    name = "relation"
    example_input = '{"text": "Anna met Bob in Rome", "head": [0, 4], "tail": [9, 12]}'
    main_metric = "micro_f1"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.vocab_size: int | None = None

    # ---- data -------------------------------------------------------------------------------------
    def load_split(self, split: str) -> list[dict]:
        return sources.load_split(self.cfg.data, split, self.iter_file, self._from_hub, "JSONL")

    def load_file(self, path: str, key: str = "file") -> list[dict]:
        return list(self.iter_file(path, key))

    def iter_file(self, path: str, key: str = "file"):
        """The marked examples of a JSONL file, streamed (errors with file:line at its end)."""
        return self._examples(iter_jsonl(path, key), str(path))

    def _from_hub(self, dataset, split: str) -> list[dict]:
        rows = ({**row, "where": f"{self.cfg.data.hub}/{split}:{i}"} for i, row in enumerate(dataset))
        return self._examples(rows, self.cfg.data.hub)

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        rows = []
        for number, line in enumerate(lines, start=first_line):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            rows.append({**(row if isinstance(row, dict) else {}), "where": f"input:{number}"})
        return [self._example(row, labelled=False) for row in rows]

    def _examples(self, rows, source: str):
        def check(row: dict) -> dict | str:
            try:
                return self._example(row, labelled=True)
            except ValueError as problem:
                return str(problem)

        return checked(rows, check, source, fix='each line needs "text" (or "tokens"), "head" and "tail" spans and "label"')

    def _example(self, row: dict, labelled: bool) -> dict:
        """The example with its marked text; for unusable predict input, an example flagged as invalid."""
        data = self.cfg.data
        try:
            text, head, tail = _character_spans(row, data.head_field, data.tail_field)
            # spans as lists: a list reads back from Arrow as it was written (a tuple would not, and keep the
            # split in memory)
            example = {"text": mark(text, head, tail), "source": text, "head": list(head), "tail": list(tail),
                       "where": row["where"]}
        except ValueError:
            if labelled:
                raise
            return {"text": "", "invalid": True, "where": row["where"]}
        if labelled:
            example["label"] = D.class_label(row.get(data.label_column, ""))
        return example

    # ---- model and features -------------------------------------------------------------------------
    def bind_tokenizer(self, tokenizer: Any) -> None:
        added = tokenizer.add_tokens(list(MARKERS), special_tokens=True)
        if added:
            log.info("added %d entity marker tokens to the tokenizer", added)
        self.vocab_size = len(tokenizer)
        super().bind_tokenizer(tokenizer)

    def build_model(self, name_or_path: str, **kwargs: Any):
        model = super().build_model(name_or_path, **kwargs)
        if self.vocab_size and model.get_input_embeddings().num_embeddings != self.vocab_size:
            model.resize_token_embeddings(self.vocab_size)
        return model

    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        budget = self.cfg.max_length - tokenizer.num_special_tokens_to_add(pair=False)
        cropped = 0
        for example in examples:
            if example.get("invalid"):
                continue
            if len(tokenizer.tokenize(example["text"])) > budget:
                example["text"] = crop(tokenizer, example["source"], example["head"], example["tail"], budget)
                cropped += 1
        if cropped:
            log.warning("%d sentence(s) longer than task.max_length were cropped around their entities", cropped)
        return super().featurize(examples, tokenizer)

    # ---- metrics and predictions --------------------------------------------------------------------
    def final_metrics(self, state: dict) -> dict:
        """Classification metrics plus micro P/R/F1 over the relations other than `no_relation`, all from the
        confusion counts (gold rows, predicted columns) that evaluation chunks add up."""
        metrics = super().final_metrics(state)
        none = self.cfg.no_relation
        if none is not None and none not in self.labels:
            raise FtuneError(f"no_relation label `{none}` is not among the labels", where="task.no_relation",
                             fix="set it to the label meaning 'no relation', or null to count every label")
        matrix = state["matrix"]
        correct, guessed = int(np.trace(matrix)), int(matrix.sum())
        expected = guessed
        if none is not None:
            i = self.labels.index(none)
            correct -= int(matrix[i, i])
            guessed -= int(matrix[:, i].sum())
            expected -= int(matrix[i].sum())
        precision = correct / guessed if guessed else 0.0
        recall = correct / expected if expected else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics.update(micro_precision=precision, micro_recall=recall, micro_f1=f1, no_relation=none)
        return metrics

    def metrics_table(self, metrics: dict) -> list[tuple]:
        rows = super().metrics_table(metrics)
        label = f"micro avg (without {metrics['no_relation']})" if metrics["no_relation"] else "micro avg"
        return [*rows, (label, metrics["micro_precision"], metrics["micro_recall"], metrics["micro_f1"],
                        metrics["examples"])]

    def format_predictions(self, predictions: list, features: list[dict], examples: list[dict]) -> list[dict]:
        rows = super().format_predictions(predictions, features, examples)
        out = []
        for example, row in zip(examples, rows, strict=True):
            if example.get("invalid"):
                out.append({"error": 'needs "text" (or "tokens") with "head" and "tail" spans'})
            else:
                out.append({"text": example["source"], "head": list(example["head"]), "tail": list(example["tail"]),
                            "relation": row["label"], "score": row["score"], "probabilities": row["probabilities"]})
        return out


def _character_spans(row: dict, head_field: str, tail_field: str) -> tuple[str, tuple, tuple]:
    """(text, head, tail) with character spans, from character offsets or token indices."""
    spans = []
    for name in (head_field, tail_field):
        span = row.get(name)
        if isinstance(span, dict):
            span = [span.get("start"), span.get("end")]
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)
                and 0 <= span[0] < span[1]):
            raise ValueError(f"`{name}` must be [start, end) with 0 <= start < end")
        spans.append(tuple(span))
    head, tail = spans
    if isinstance(row.get("tokens"), list):
        tokens = [str(t) for t in row["tokens"]]
        if max(head[1], tail[1]) > len(tokens):
            raise ValueError(f"entity token index beyond the {len(tokens)} tokens")
        starts = [sum(len(t) + 1 for t in tokens[:i]) for i in range(len(tokens) + 1)]
        text = " ".join(tokens)
        head, tail = (starts[head[0]], starts[head[1]] - 1), (starts[tail[0]], starts[tail[1]] - 1)
    elif isinstance(row.get("text"), str) and row["text"].strip():
        text = row["text"]
        if max(head[1], tail[1]) > len(text):
            raise ValueError(f"entity offset beyond the text's {len(text)} characters")
    else:
        raise ValueError('no "text" or "tokens"')
    if head[0] < tail[1] and tail[0] < head[1]:
        raise ValueError("head and tail overlap")
    return text, head, tail


def mark(text: str, head: tuple, tail: tuple) -> str:
    """Insert [E1] … [/E1] around the head and [E2] … [/E2] around the tail."""
    cuts = sorted([(head[0], "[E1] "), (head[1], " [/E1]"), (tail[0], "[E2] "), (tail[1], " [/E2]")], reverse=True)
    for position, marker in cuts:
        text = text[:position] + marker + text[position:]
    return text


def crop(tokenizer: Any, text: str, head: tuple, tail: tuple, budget: int) -> str:
    """The marked text of the smallest character window around both entities that is still widened by
    whole words on each side while it fits in `budget` tokens."""
    first, last = min(head[0], tail[0]), max(head[1], tail[1])
    left, right = first, last
    while True:
        wider_left = text.rfind(" ", 0, max(left - 1, 0)) + 1 if left > 0 else 0
        wider_right = text.find(" ", right + 1) if right < len(text) else len(text)
        wider_right = len(text) if wider_right == -1 else wider_right
        if (wider_left, wider_right) == (left, right):
            break
        candidate = mark(text[wider_left:wider_right], _shift(head, wider_left), _shift(tail, wider_left))
        if len(tokenizer.tokenize(candidate)) > budget:
            break
        left, right = wider_left, wider_right
    return mark(text[left:right], _shift(head, left), _shift(tail, left))


def _shift(span: tuple, by: int) -> tuple:
    return span[0] - by, span[1] - by
