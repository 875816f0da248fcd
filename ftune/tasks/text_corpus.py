"""Raw text for continued pretraining (mlm, clm): documents, not labelled examples.

Documents come from `.txt` files (one per line, or blocks separated by blank lines: `task.data.documents`),
`.jsonl` files or the text column of `.csv`/`.tsv` tables (`task.data.text_field`; labels are not read), several files or globs in one setting (`a.txt,more/*.txt`), or a
hub dataset's text column. They are streamed into the memory-mapped example store like every task's
examples (ftune/data/examples.py) and packed into `max_length` blocks by the task's `featurize`, which the
feature cache stores memory-mapped too, so a corpus is never a Python list. Without `task.data.validation`
the last `task.data.validation_fraction` of the training documents is held out, whole documents only.

`CorpusTask` holds what the two tasks share: reading, the held-out split, `predict` lines, and the metrics
(summed token NLL → loss and perplexity; mlm adds the masked-token accuracy), kept as running sums.
"""

from __future__ import annotations

import glob
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from ftune.config.fields import bounded, choice
from ftune.config.tasks import DataSourceConfig
from ftune.data import sources
from ftune.data.readers import DataErrors, iter_jsonl, iter_table, read_lines
from ftune.errors import FtuneError
from ftune.paths import existing_file
from ftune.tasks.base import TaskBase

FORMATS = {"jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv",), "tsv": (".tsv",)}


@dataclass
class TextDataConfig(DataSourceConfig):
    """task.data.train/validation/test: one file, several (comma-separated) or globs (`corpus/*.txt`)."""

    format: str = choice("auto", "txt", "jsonl", "csv", "tsv")  # auto: by extension (.jsonl/.json, .csv, .tsv), else txt
    text_field: str = MISSING  # jsonl: the key holding a document's text; csv/tsv (with a header) and hub: its column
    documents: str = choice("lines", "blank_lines")  # txt: one document per line, or blank-line separated blocks
    # without task.data.validation: this fraction of the training documents (the last ones) is held out
    validation_fraction: float = bounded(ge=0, lt=1)


def expand(spec: str, key: str) -> list[str]:
    """The files of a comma-separated list of paths and globs, in order (each glob sorted)."""
    paths: list[str] = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        if any(c in part for c in "*?["):
            found = sorted(glob.glob(part, recursive=True))
            if not found:
                raise FtuneError(f"no file matches `{part}`", where=key, fix="check the pattern (relative to the "
                                 "current directory)")
            paths += found
        else:
            paths.append(part)
    if not paths:
        raise FtuneError("no file given", where=key, fix="give a .txt or .jsonl file, several comma-separated, or a glob")
    return paths


class CorpusTask(TaskBase):
    """The shared part of the raw-text tasks (not registered itself)."""

    main_metric, greater_is_better = "loss", False
    table_columns = ("value",)
    has_labels = False

    def __init__(self, cfg: Any):
        self.cfg, self.labels = cfg, []
        self.tokenizer, self.pad_id = None, 0

    # ---- data ---------------------------------------------------------------------------------------
    def load_split(self, split: str):
        d = self.cfg.data
        held_out = split in ("train", "validation") and not d.get("validation") and d.get("validation_fraction")
        if held_out and d.get("train"):
            docs = self._read("train")
            if not docs:
                return docs
            n = len(docs)
            cut = n - max(1, int(n * d.validation_fraction)) if n > 1 else n
            part = docs[:cut] if split == "train" else docs[cut:]
            if getattr(docs, "key", None) is not None:  # the feature cache keys a slice of the stored rows by this
                part.key = f"{docs.key}[{':'.join(map(str, (0, cut) if split == 'train' else (cut, n)))}]"
            return part
        return self._read(split)

    def _read(self, split: str):
        d = self.cfg.data
        spec = d.get(split)
        if not spec:  # no file for this split: none, or the hub's split
            return sources.load_split(d, split, self.iter_file, self._from_hub, "text (.txt or .jsonl)")
        key, paths = f"task.data.{split}", expand(spec, f"task.data.{split}")
        if len(paths) == 1:
            return sources.load_path(paths[0], key, self.iter_file, d.get(f"max_{split}"), split)
        from ftune.data.digests import file_digest
        from ftune.data.examples import stored

        digest = hashlib.sha256("|".join(file_digest(existing_file(p, key)) for p in paths).encode()).hexdigest()
        limit = d.get(f"max_{split}")

        def read():
            rows = (row for path in paths for row in self.iter_file(path, key))
            return sources.limited(rows, limit) if limit else rows

        return stored(",".join(paths), {**sources.reader_settings(self.iter_file), "files": paths, "limit": limit},
                      read, split, digest=f"files:{digest}")

    def load_file(self, path: str, key: str = "file") -> list[dict]:
        return list(self.iter_file(path, key))

    def iter_file(self, path: str, key: str = "file"):
        """The documents of one file, streamed: {"text", "where"}."""
        fmt = self.cfg.data.format
        if fmt == "auto":
            fmt = next((f for f, ends in FORMATS.items() if str(path).endswith(ends)), "txt")
        if fmt == "jsonl":
            return self._documents(iter_jsonl(path, key), str(path))
        if fmt in ("csv", "tsv"):  # a labelled table's text column (the labels are not read): TAPT
            return self._documents(iter_table(path, key, "\t" if fmt == "tsv" else ","), str(path))
        return self._lines(path, key)

    def _lines(self, path: str, key: str):
        file, blocks = existing_file(path, key), self.cfg.data.documents == "blank_lines"
        lines, first = [], 0
        for number, line in read_lines(file):
            if not blocks:
                if line.strip():
                    yield {"text": line, "where": f"{path}:{number}"}
            elif line.strip():
                lines, first = lines + [line], first or number
            elif lines:
                yield {"text": "\n".join(lines), "where": f"{path}:{first}"}
                lines, first = [], 0
        if lines:
            yield {"text": "\n".join(lines), "where": f"{path}:{first}"}

    def _from_hub(self, dataset, split: str):
        source = f"{self.cfg.data.hub}/{split}"
        return self._documents(({**row, "where": f"{source}:{i}"} for i, row in enumerate(dataset)), source)

    def _documents(self, rows, source: str):
        field, errors = self.cfg.data.text_field, DataErrors(source)
        fix = f"each row needs a string `{field}` (task.data.text_field)"
        try:
            for row in rows:
                text = row.get(field)
                if not isinstance(text, str):
                    errors.add(row.get("where", source), f"no string `{field}`")
                elif text.strip():
                    yield {"text": text, "where": row.get("where", "")}
        except GeneratorExit:
            errors.raise_if_any(fix=fix)
            raise
        errors.raise_if_any(fix=fix)

    def read_inputs(self, lines: list[str], first_line: int = 1) -> list[dict]:
        return [{"text": line} for line in lines]

    def fit_labels(self, train: Any, others: dict) -> None:
        if not train:
            raise FtuneError("the training split holds no document", where="task.data.train")

    def check_examples(self, examples: Any, split: str) -> None:
        pass

    def bind_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def encode(self, examples: list[dict], tokenizer: Any, **kwargs: Any) -> dict:
        """The documents' token ids (no truncation: packing cuts them), quietly (no over-length warning)."""
        return tokenizer([e["text"] for e in examples], truncation=False, verbose=False, **kwargs)

    # ---- metrics: running sums of each feature's target NLL, targets and correct predictions ---------------
    def metric_state(self) -> dict:
        return {"nll": 0.0, "tokens": 0, "correct": 0}

    def update_metrics(self, state: dict, predictions: list[dict], features, examples, first: int = 0) -> None:
        for p in predictions:
            if p is not None:
                state["nll"] += p.get("nll", 0.0)
                state["tokens"] += p.get("tokens", 0)
                state["correct"] += p.get("correct", 0)

    def final_metrics(self, state: dict) -> dict:
        tokens = state["tokens"]
        loss = state["nll"] / max(tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": state["correct"] / max(tokens, 1),
                "target_tokens": tokens}

    def metrics_table(self, metrics: dict) -> list[tuple]:
        return [(k, v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)]


def row_sums(nll: Any, correct: Any, keep: Any) -> list[dict]:
    """Per-row {nll, tokens, correct} of a batch from per-position tensors (the rows are the features)."""
    sums = zip(nll.sum(1).tolist(), keep.sum(1).tolist(), correct.sum(1).tolist(), strict=True)
    return [{"nll": n, "tokens": int(t), "correct": int(c)} for n, t, c in sums]
