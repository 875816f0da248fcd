"""Data of the sequence-level tasks: CSV/TSV/JSONL files or hub datasets → checked examples.

An example is {"text", ["text_pair"], "label", "where"}; the label has been parsed by the task's parser
(class name, number or list of names). Every bad row is reported with its file:line, all in one error.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ftune.data import sources
from ftune.data.examples import Rows
from ftune.data.readers import checked, iter_jsonl, iter_table, json_object
from ftune.errors import FtuneError, did_you_mean
from ftune.paths import resolve

log = logging.getLogger("ftune")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


# ---- label parsers: raise ValueError with the problem ------------------------------------------------
def class_label(value: Any) -> str:
    """A class name: strings as they are (stripped), integer ids as their decimal names ("0", "1")."""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"not a class label: {value!r}")


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    try:
        result = float(value)
    except ValueError:
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(result):
        raise ValueError(f"not a finite number: {value!r}")
    return result


def label_list(value: Any, delimiter: str) -> list[str]:
    """Names from a JSON list (also inside a CSV cell) or a delimiter-separated string; "" is no label."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"invalid JSON list ({error.msg})") from None
    if isinstance(value, str):
        value = [part for part in value.split(delimiter) if part.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"not a list of labels: {value!r}")
    names = [str(v).strip() for v in value]
    if "" in names:
        raise ValueError("an empty label name")
    return list(dict.fromkeys(names))


def sort_labels(names, order: list[str] | None = None) -> list[str]:
    """Sorted label names: in `order` (a hub dataset's class order) when given, numerically when all are
    integers ("2" before "10"), else alphabetically."""
    names = set(names)
    if order:
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def distinct_labels(examples) -> set[str]:
    """The label names of examples (a list of names per example for multi-label): on disk from the Arrow
    column (vectorised, no row objects: a split of millions costs a scan, not Python dicts), else by iteration."""
    column = _label_column(examples)
    if column is not None:
        import pyarrow.compute as pc

        return {name for name in pc.unique(column).to_pylist() if name is not None}
    names: set[str] = set()
    for ex in examples:
        if "label" in ex:
            names.update(ex["label"] if isinstance(ex["label"], list) else [ex["label"]])
    return names


def label_counts(examples) -> dict[str, int]:
    """How many examples have each (single) label; on disk counted in Arrow."""
    column = _label_column(examples)
    if column is not None:
        import pyarrow.compute as pc

        counts = pc.value_counts(column)
        return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))
    counts: dict[str, int] = {}
    for ex in examples:
        counts[ex["label"]] = counts.get(ex["label"], 0) + 1
    return counts


def _label_column(examples):
    """The `label` column of examples on disk as flat strings (lists flattened), or None (in memory, numbers)."""
    if not isinstance(examples, Rows) or "label" not in examples.table.column_names:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    column = examples.column("label")
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    return column if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) else None


class SequenceData:
    """Reads the configured splits, other files and `predict` input lines of a sequence task."""

    def __init__(self, data_cfg: Any, task: str, parse: Callable[[Any], Any]):
        self.cfg, self.task, self.parse = data_cfg, task, parse
        self.pair = bool(data_cfg.get("text_pair_column"))
        keys = ["text_column", "text_pair_column", "label_column"] if self.pair else ["text_column", "label_column"]
        self.columns = {key: data_cfg[key] for key in keys}
        self.label_order: list[str] | None = None  # class order of a hub dataset's ClassLabel column

    def split(self, split: str) -> list[dict]:
        return sources.load_split(self.cfg, split, self.file, self.hub, "CSV, TSV or JSONL")

    def file(self, path: str, key: str = "file") -> Iterator[dict]:
        """The checked examples of a file, streamed (sources.load_split writes them to Arrow in chunks)."""
        kind = self.cfg.format
        if kind == "auto":
            kind = FORMATS.get(resolve(path, key).suffix.lower(), "unknown")
        if kind not in ("csv", "tsv", "jsonl"):
            raise FtuneError(f"cannot tell the format of {path}", where="task.data.format",
                             fix="name the file .csv, .tsv or .jsonl, or set task.data.format=csv|tsv|jsonl")
        if kind == "jsonl":
            return self.examples(iter_jsonl(path, key), str(path))
        rows = iter_table(path, key, "\t" if kind == "tsv" else ",",
                          on_header=lambda columns: self.require_columns(columns, f"{path} (header line)"))
        return self.examples(rows, str(path))

    def hub(self, dataset, split: str):
        """The checked examples of a hub split, streamed; the column checks and class names come at once."""
        data = self.cfg
        source = f"{data.hub}/{split}"
        self.require_columns(dataset.column_names, source)
        feature = dataset.features[data.label_column]  # ClassLabel (or a list of them): ids → names
        names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
        self.label_order = list(names) if names else None

        def rows():
            unlabeled = 0
            for i, row in enumerate(dataset):
                label = row[data.label_column]
                if names and isinstance(label, list):
                    label = [names[j] for j in label]
                elif names:
                    if label is None or label < 0:  # GLUE test splits: label -1
                        unlabeled += 1
                        continue
                    label = names[label]
                yield {**row, data.label_column: label, "where": f"{source}:{i}"}
            if unlabeled:
                log.warning("%s: %d example(s) without a label (-1) left out", source, unlabeled)

        return self.examples(rows(), source)

    def require_columns(self, available: list[str], where: str) -> None:
        for key, column in self.columns.items():
            if column not in available:
                hint = did_you_mean(column, available)
                raise FtuneError(f"no column `{column}` (columns: {', '.join(available)})", where=where,
                                 fix=f"{hint + ' ' if hint else ''}set task.data.{key}=<column>")

    def examples(self, rows: Iterable[dict], source: str) -> Iterator[dict]:
        """Checked examples, streamed; every bad row is reported with its `where` (first few and the count)."""
        return checked(rows, self.example, source,
                       fix=f"every example needs {', '.join(f'`{c}`' for c in self.columns.values())} "
                           "(task.data.text_column / label_column name the columns)")

    def example(self, row: dict) -> dict | str:
        """The example of one row, or what is wrong with it."""
        problems, example = [], {"where": row["where"]}
        for key, column in self.columns.items():
            value = row.get(column)
            if column not in row:
                problems.append(f"no field `{column}`")
            elif key == "label_column":
                try:
                    example["label"] = self.parse(value)
                except ValueError as error:
                    problems.append(f"`{column}`: {error}")
            elif not isinstance(value, str) or not value.strip():
                problems.append(f"`{column}` is {'empty' if isinstance(value, str) else 'not a string'}")
            else:
                example["text_pair" if key == "text_pair_column" else "text"] = value
        return "; ".join(problems) if problems else example

    def inputs(self, lines: list[str]) -> list[dict]:
        """`predict` lines: plain text (pairs: text<TAB>text_pair) or JSON {"text": ..., "text_pair": ...}."""
        examples = []
        for line in lines:
            row = json_object(line)
            if isinstance(row, dict):
                text = row.get("text", row.get(self.cfg.text_column))
                pair = row.get("text_pair", row.get(self.cfg.text_pair_column))
                text, pair = text if isinstance(text, str) else line, pair if isinstance(pair, str) else None
            elif self.pair:
                text, tab, pair = line.partition("\t")
                pair = pair if tab else None
            else:
                text, pair = line, None
            if self.pair and pair is None:  # reported on this line's output; the other lines go on
                examples.append({"text": text, "text_pair": "", "error": 'a pair task needs two texts: write '
                                 '`text<TAB>text_pair` or {"text": ..., "text_pair": ...}'})
                continue
            examples.append({"text": text, "text_pair": pair} if self.pair else {"text": text})
        return examples
