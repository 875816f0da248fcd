"""Named-entity recognition as token classification.

Words are split into sub-tokens; only a word's first sub-token carries its label (or all of them with
`label_all_tokens`), and metrics always read the first sub-token's prediction, one per word, so entity
counts are never inflated by sub-words. Sentences longer than `max_length` become several windows: each
word is owned (trained and predicted) by exactly one window, with up to `stride` tokens of context around.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from ftune import registry
from ftune.config.fields import bounded, choice, section
from ftune.config.tasks import DataSourceConfig
from ftune.data import sources
from ftune.data.batching import pad
from ftune.data.examples import Rows
from ftune.data.readers import DataErrors, detect_format, iter_conll, iter_tagged_jsonl, json_object
from ftune.errors import FtuneError
from ftune.paths import resolve
from ftune.tasks import entity_metrics
from ftune.tasks import tag_schemes as ts
from ftune.tasks.base import TaskBase
from ftune.tasks.windows import plan_windows, special_tokens, token_words

WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


@dataclass
class NerDataConfig(DataSourceConfig):
    """Files: CoNLL columns or JSONL {"tokens", "tags"}."""

    format: str = choice("auto", "conll", "jsonl")
    token_column: int = MISSING
    tag_column: int = MISSING
    tokens_field: str = MISSING
    tags_field: str = MISSING


@dataclass
class NerTaskConfig:
    name: str = MISSING
    data: NerDataConfig = section(NerDataConfig)
    scheme: str = choice("auto", "IOB1", "IOB2", "BIOES")
    max_length: int = bounded(ge=8)  # sub-word tokens per window, special tokens included
    stride: int = bounded(ge=0)  # context tokens kept on each side when a sentence is split into windows
    label_all_tokens: bool = MISSING  # train on every sub-token (metrics still use the first one)


@registry.task("ner", NerTaskConfig)
class NerTask(TaskBase):
    name = "ner"
    prompting = "entities"  # ftune eval prompt=...: generated and parsed (ftune/prompted/)
    main_metric = "f1"
    greater_is_better = True
    pipeline_task = "token-classification"
    pipeline_tag = "token-classification"
    auto_class = "AutoModelForTokenClassification"
    card_example = "Angela Merkel met Emmanuel Macron in Paris ."
    onnx_outputs = ("logits",)
    explainable, stress_input = True, "tagged_tokens"
    pseudo_labels = True  # continual.pseudo_label: an earlier model's entities on words the new data tags O

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.labels: list[str] = []
        self.scheme = cfg.scheme
        self.pad_id = 0

    # ---- data -------------------------------------------------------------------------------------
    def load_split(self, split: str) -> list[dict]:
        return sources.load_split(self.cfg.data, split, self.iter_file, self._from_hub, "CoNLL or JSONL")

    def load_file(self, path: str, key: str = "file") -> list[dict]:
        return list(self.iter_file(path, key))

    def iter_file(self, path: str, key: str = "file"):
        """Sentences of a CoNLL or JSONL file, streamed (data errors at the end, with file:line)."""
        data = self.cfg.data
        if detect_format(resolve(path, key), data.format) == "jsonl":
            return iter_tagged_jsonl(path, key, data.tokens_field, data.tags_field)
        return iter_conll(path, key, data.token_column, data.tag_column)

    def _from_hub(self, dataset, split: str) -> list[dict]:
        names = dataset.features["ner_tags"].feature.names  # ClassLabel ids → tag names
        return ({"tokens": row["tokens"], "tags": [names[t] for t in row["ner_tags"]],
                 "where": f"{self.cfg.data.hub}/{split}:{i}"} for i, row in enumerate(dataset))  # streamed

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        examples = []
        for line in lines:
            row = json_object(line)
            if isinstance(row, dict) and isinstance(row.get("tokens"), list):
                examples.append({"tokens": [str(t) for t in row["tokens"]]})
                continue
            text = row["text"] if isinstance(row, dict) and isinstance(row.get("text"), str) else line
            matches = list(WORD.finditer(text))
            examples.append({"text": text, "tokens": [m.group() for m in matches],
                             "offsets": [(m.start(), m.end()) for m in matches]})
        return examples

    # ---- labels -------------------------------------------------------------------------------------
    def fit_labels(self, train: list[dict], others: dict[str, list[dict]]) -> None:
        if not train:
            raise FtuneError("the training split is empty", where="task.data.train",
                             fix="point task.data.train at a non-empty CoNLL or JSONL file")
        self.scheme = self.cfg.scheme
        self._check(train, "train", known=None)  # well-formed tags first: detection needs them
        on_disk = isinstance(train, Rows)
        if self.scheme == "auto":
            self.scheme = ts.detect_scheme_on_disk(train) if on_disk else ts.detect_scheme([ex["tags"] for ex in train])
        tags = ts.distinct_tags(train) if on_disk else {tag for ex in train for tag in ex["tags"]}
        self.labels = ts.sort_labels(tags)
        for split, examples in others.items():
            self._check(examples, split, known=set(self.labels))

    def check_examples(self, examples: list[dict], split: str) -> None:
        """Validate gold tags against the labels of an already trained model."""
        self._check(examples, split, known=set(self.labels))

    def _check(self, examples: list[dict], split: str, known: set[str] | None) -> None:
        scheme = self.scheme if self.scheme != "auto" else "BIOES"

        def problem(tag: str) -> str | None:
            found = ts.scheme_problem(tag, scheme)
            if found is None and known is not None and tag not in known:
                found = f"label `{tag}` does not occur in the training data"
            return found

        # Examples on disk: the distinct tags are found in Arrow; the rows are read only to locate problems.
        if isinstance(examples, Rows) and not any(problem(tag) for tag in ts.distinct_tags(examples)):
            return
        errors = DataErrors(f"the {split} split")
        for ex in examples:
            for tag in ex.get("tags", []):
                if found := problem(tag):
                    errors.add(ex["where"], found)
        errors.raise_if_any(fix=f"fix the tags (scheme {scheme}; labels: {', '.join(sorted(known or []))[:200]})")

    def pseudo_label(self, examples: list[dict], predict: Any) -> tuple[list[dict], int]:
        """Background shift: new data tags the earlier types O. The earlier model's entities (`predict`: its
        `format_predictions` rows) on words tagged O here are written in (ts.fill_untagged)."""
        predicted = predict([{"tokens": example["tokens"]} for example in examples])  # the new tags: not its labels
        out, added = [], 0
        for example, guess in zip(examples, predicted, strict=True):
            spans = [(e["type"], e["start_token"], e["end_token"]) for e in guess["entities"]]
            tags, count = ts.fill_untagged(example["tags"], spans, self.scheme, set(self.labels))
            out.append({**example, "tags": tags} if count else example)
            added += count
        return out, added

    # ---- model and features -------------------------------------------------------------------------
    def build_model(self, name_or_path: str, **kwargs: Any):
        from transformers import AutoModelForTokenClassification

        from ftune.models import load_pretrained

        return load_pretrained(AutoModelForTokenClassification, name_or_path, num_labels=len(self.labels),
                               id2label=dict(enumerate(self.labels)),
                               label2id={l: i for i, l in enumerate(self.labels)}, **kwargs)

    def bind_tokenizer(self, tokenizer: Any) -> None:
        self.pad_id = tokenizer.pad_token_id or 0
        self._specials = special_tokens(tokenizer)

    def featurize(self, examples: list[dict], tokenizer: Any) -> list[dict]:
        self.bind_tokenizer(tokenizer)
        label2id = {l: i for i, l in enumerate(self.labels)}
        next_id = {i: label2id[ts.continuation(l, self.labels)] for i, l in enumerate(self.labels)}
        budget = self.cfg.max_length - sum(len(ids) for ids in self._specials)
        if budget < 4:
            raise FtuneError(f"max_length {self.cfg.max_length} leaves no room for words", where="task.max_length")
        # config values read once: an OmegaConf attribute costs ~70 µs, per word that was half the time
        stride, label_all = self.cfg.stride, self.cfg.label_all_tokens
        features = []
        for start in range(0, len(examples), 1000):
            chunk = examples[start:start + 1000]
            encoded = tokenizer([ex["tokens"] for ex in chunk], is_split_into_words=True, add_special_tokens=False)
            for offset, ex in enumerate(chunk):
                pieces: list[list[int]] = [[] for _ in ex["tokens"]]
                for token_id, word in zip(encoded["input_ids"][offset], encoded.word_ids(offset), strict=True):
                    if word is not None and len(pieces[word]) < budget:
                        pieces[word].append(token_id)
                tags = [label2id[t] for t in ex["tags"]] if "tags" in ex else None
                for window in plan_windows([len(p) for p in pieces], budget, stride):
                    features.append(self._window(pieces, tags, window, next_id, label_all, start + offset))
        return features

    def _window(self, pieces, tags, window, next_id, label_all: bool, example: int) -> dict:
        left, own_start, own_end, right = window
        prefix, suffix = self._specials
        ids, labels, words = list(prefix), [-100] * len(prefix), [-1] * len(prefix)
        for w in range(left, right):
            piece = pieces[w]
            if not piece:
                continue
            owned = own_start <= w < own_end
            ids += piece
            words.append(w if owned else -1)
            words += [-1] * (len(piece) - 1)
            if tags is None or not owned:
                labels += [-100] * len(piece)
            else:
                labels.append(tags[w])
                labels += [next_id[tags[w]] if label_all else -100] * (len(piece) - 1)
        ids += suffix
        labels += [-100] * len(suffix)
        words += [-1] * len(suffix)
        return {"input_ids": ids, "labels": labels, "words": words, "example": example, "length": len(ids)}

    def collate(self, features: list[dict]) -> dict:
        ids = torch.tensor(pad([f["input_ids"] for f in features], self.pad_id))
        mask = torch.tensor(pad([[1] * f["length"] for f in features], 0))
        return {"inputs": {"input_ids": ids, "attention_mask": mask},
                "targets": {"labels": torch.tensor(pad([f["labels"] for f in features], -100))},
                "words": [f["words"] for f in features], "tokens": int(mask.sum())}

    # ---- loss, predictions, metrics -------------------------------------------------------------------
    def loss(self, outputs: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = outputs.logits, batch["targets"]["labels"]
        total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
        return total, (labels != -100).sum()

    def decode(self, outputs: Any, batch: dict) -> list[list[tuple[int, int, float]]]:
        confidence, predicted = outputs.logits.float().softmax(-1).max(-1)
        confidence, predicted = confidence.cpu().tolist(), predicted.cpu().tolist()
        return [[(w, predicted[b][t], confidence[b][t]) for t, w in enumerate(words) if w >= 0]
                for b, words in enumerate(batch["words"])]

    def _word_predictions(self, predictions, features, examples, first: int = 0):
        """Per-word tags and confidences of examples[first:first + len(examples)]."""
        tags = [["O"] * len(ex["tokens"]) for ex in examples]
        scores = [[0.0] * len(ex["tokens"]) for ex in examples]
        for feature, predicted in zip(features, predictions, strict=True):
            for word, label, confidence in predicted:
                tags[feature["example"] - first][word] = self.labels[label]
                scores[feature["example"] - first][word] = confidence
        return tags, scores

    # Metrics are counts (entities per type: gold, predicted, correct; words: all, correct), accumulated
    # chunk by chunk (Engine.evaluate), so a large split never holds all predictions and examples at once.
    def metric_state(self) -> dict:
        return entity_metrics.new_state()

    def update_metrics(self, state: dict, predictions: list, features, examples, first: int = 0) -> None:
        """Add the counts of examples[first:first + len(examples)] (the features of exactly those examples)."""
        predicted, _ = self._word_predictions(predictions, features, examples, first)
        for ex, tags in zip(examples, predicted, strict=True):
            entity_metrics.add(state, ex["tags"], tags)

    def final_metrics(self, state: dict) -> dict:
        return entity_metrics.final(state)

    def metrics_table(self, metrics: dict) -> list[tuple]:
        rows = [(kind, m["precision"], m["recall"], m["f1"], m["support"]) for kind, m in metrics["per_type"].items()]
        return [*rows, ("micro avg", metrics["precision"], metrics["recall"], metrics["f1"], metrics["entities"])]

    def explain_targets(self, feature: dict, probabilities: Any, target: str | None) -> list[dict]:
        return ts.entity_targets(feature["words"], probabilities, self.labels, target)  # target: an entity type

    def explain_words(self, example: dict, feature: dict, tokenizer: Any) -> tuple[list[str], list] | None:
        index = token_words(tokenizer, example["tokens"], feature)
        return (example["tokens"], index) if index is not None else None

    def format_predictions(self, predictions: list, features: list[dict], examples: list[dict]) -> list[dict]:
        tags, scores = self._word_predictions(predictions, features, examples)
        results = []
        for ex, ex_tags, ex_scores in zip(examples, tags, scores, strict=True):
            found = []
            for kind, first, last in ts.entities(ex_tags):
                score = sum(ex_scores[first:last + 1]) / (last - first + 1)
                entity = {"type": kind, "score": round(score, 4)}
                if "offsets" in ex:
                    start, end = ex["offsets"][first][0], ex["offsets"][last][1]
                    entity.update(text=ex["text"][start:end], start=start, end=end)
                else:
                    entity.update(text=" ".join(ex["tokens"][first:last + 1]), start_token=first, end_token=last + 1)
                found.append(entity)
            row = {"text": ex["text"]} if "text" in ex else {"tokens": ex["tokens"], "tags": ex_tags}
            results.append({**row, "entities": found})
        return results
