"""Readers that stream data files as plain example dicts, with file:line in every error.

Each example carries `where` ("file:line") so that later validation can point at the source. The `iter_*`
readers are generators (sources.load_split writes what they yield to an Arrow file in chunks, so no split is
ever a whole Python list); their data errors are collected and raised when they are exhausted or closed
early (first few problems and the total count). The `read_*` forms are the same as lists, for small files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ftune.errors import FtuneError
from ftune.paths import existing_file

DOCSTART = "-DOCSTART-"
MAX_REPORTED = 5


class DataErrors:
    """Collects data problems and raises one FtuneError listing the first few and the total."""

    def __init__(self, what: str):
        self.what, self.problems, self.count = what, [], 0  # the first few problems, and how many in all

    def add(self, where: str, problem: str) -> None:
        self.count += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"{where}: {problem}")

    def raise_if_any(self, fix: str) -> None:
        if self.count:
            shown = "; ".join(self.problems)
            more = f" (and {self.count - MAX_REPORTED} more)" if self.count > MAX_REPORTED else ""
            raise FtuneError(f"{self.count} problem(s) in {self.what}: {shown}{more}", fix=fix)


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) with undecodable bytes reported as a data error, not a UnicodeDecodeError."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise FtuneError(f"bytes that are not UTF-8 at column {error.start + 1}", where=f"{path}:{number}",
                                 fix="re-encode the file as UTF-8") from error


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return "conll"


def read_conll(path: str, key: str, token_column: int = 0, tag_column: int = -1) -> list[dict]:
    """Sentences from a CoNLL column file: blank lines and -DOCSTART- lines separate sentences."""
    return list(iter_conll(path, key, token_column, tag_column))


def iter_conll(path: str, key: str, token_column: int = 0, tag_column: int = -1) -> Iterator[dict]:
    """read_conll as a generator: the file is never a whole list. Its data errors are raised when it is
    exhausted, or when it is closed early (a `max_train` limit): those in the part read are reported."""
    file = existing_file(path, key)
    errors = DataErrors(str(path))
    tokens, tags, start = [], [], 0
    fix = "CoNLL files need one token per line with its tag in a column, blank lines between sentences"
    try:
        for number, line in read_lines(file):
            fields = line.split()
            if not fields or fields[0] == DOCSTART:
                if tokens:
                    yield {"tokens": tokens, "tags": tags, "where": f"{path}:{start}"}
                    tokens, tags = [], []
                continue
            try:
                token, tag = fields[token_column], fields[tag_column]
            except IndexError:
                errors.add(f"{path}:{number}", f"{len(fields)} column(s), need columns {token_column} and {tag_column}")
                continue
            if len(fields) < 2:
                errors.add(f"{path}:{number}", "a token with no tag column")
                continue
            if not tokens:
                start = number
            tokens.append(token)
            tags.append(tag)
        if tokens:
            yield {"tokens": tokens, "tags": tags, "where": f"{path}:{start}"}
    except GeneratorExit:
        errors.raise_if_any(fix=fix)
        raise
    errors.raise_if_any(fix=fix)


def read_jsonl(path: str, key: str) -> list[dict]:
    """One JSON object per non-blank line, each with its `where`."""
    return list(iter_jsonl(path, key))


def iter_jsonl(path: str, key: str) -> Iterator[dict]:
    """read_jsonl as a generator (errors raised at its end, or when closed early)."""
    file = existing_file(path, key)
    errors = DataErrors(str(path))
    try:
        for number, line in read_lines(file):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                errors.add(f"{path}:{number}", f"invalid JSON ({error.msg})")
                continue
            if not isinstance(row, dict):
                errors.add(f"{path}:{number}", "expected a JSON object")
                continue
            row["where"] = f"{path}:{number}"
            yield row
    except GeneratorExit:
        errors.raise_if_any(fix="write one JSON object per line")
        raise
    errors.raise_if_any(fix="write one JSON object per line")


def read_tagged_jsonl(path: str, key: str, tokens_field: str = "tokens", tags_field: str = "tags") -> list[dict]:
    """Sentences from JSONL lines like {"tokens": [...], "tags": [...]}."""
    return list(iter_tagged_jsonl(path, key, tokens_field, tags_field))


def iter_tagged_jsonl(path: str, key: str, tokens_field: str = "tokens", tags_field: str = "tags") -> Iterator[dict]:
    errors = DataErrors(str(path))
    fix = f"each line needs `{tokens_field}` and `{tags_field}` lists of equal length"
    rows = iter_jsonl(path, key)
    try:
        for row in rows:
            tokens, tags = row.get(tokens_field), row.get(tags_field)
            if not isinstance(tokens, list) or not isinstance(tags, list):
                errors.add(row["where"], f"needs list fields `{tokens_field}` and `{tags_field}`")
                continue
            if len(tokens) != len(tags):
                errors.add(row["where"], f"{len(tokens)} tokens but {len(tags)} tags")
                continue
            if tokens:
                yield {"tokens": [str(t) for t in tokens], "tags": [str(t) for t in tags], "where": row["where"]}
    except GeneratorExit:
        rows.close()
        errors.raise_if_any(fix=fix)
        raise
    errors.raise_if_any(fix=fix)


def read_table(path: str, key: str, delimiter: str | None = None) -> list[dict]:
    """Rows of a CSV or TSV file with a header line (see iter_table), as a list."""
    return list(iter_table(path, key, delimiter))


def iter_table(path: str, key: str, delimiter: str | None = None,
               on_header: Callable[[list[str]], None] | None = None) -> Iterator[dict]:
    """Rows of a CSV or TSV file with a header line, streamed: one dict per row keyed by column name, with `where`.

    The delimiter comes from the extension unless given: `.tsv` → tab, anything else → comma. Tab-separated
    files are read without quoting, as GLUE's are (a `"` is an ordinary character there); comma-separated
    files use standard CSV quoting, so a quoted field may hold commas and line breaks. `where` is the line
    on which a row starts. Blank lines are skipped. `on_header(columns)` checks the header as soon as it is
    read (a missing column fails at once, not after a whole file of rows). Rows with the wrong number of
    fields are collected and raised at the end (or when the generator is closed early), as iter_jsonl does.
    """
    file = existing_file(path, key)
    if delimiter is None:
        delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    kind = "TSV" if delimiter == "\t" else "CSV"
    separator = "tab" if delimiter == "\t" else repr(delimiter)
    fix = f"each {kind} row needs as many {separator}-separated fields as the header line"
    errors = DataErrors(str(path))
    reader = csv.reader((text + "\n" for _, text in read_lines(file)), delimiter=delimiter, quoting=quoting)
    header: list[str] | None = None
    previous = 0
    try:
        for fields in reader:
            start, previous = previous + 1, reader.line_num
            if not any(field.strip() for field in fields):
                continue
            if header is None:
                header = [field.strip() for field in fields]
                header[0] = header[0].lstrip("\ufeff")  # byte-order mark written by spreadsheet programs
                if "" in header or len(set(header)) < len(header):
                    raise FtuneError(f"the header line needs distinct, non-empty column names, got {header}",
                                     where=f"{path}:{start}", fix=f"start the {kind} file with a header line")
                if on_header is not None:
                    on_header(header)
                continue
            if len(fields) != len(header):
                errors.add(f"{path}:{start}", f"{len(fields)} field(s), the header has {len(header)}")
                continue
            row: dict = dict(zip(header, fields, strict=True))
            row["where"] = f"{path}:{start}"
            yield row
    except csv.Error as error:
        raise FtuneError(f"unreadable {kind} ({error})", where=f"{path}:{reader.line_num}",
                         fix="check the quoting around this line") from error
    except GeneratorExit:
        errors.raise_if_any(fix=fix)
        raise
    errors.raise_if_any(fix=fix)


def checked(rows: Iterable[dict], check: Callable[[dict], dict | str], what: str, fix: str) -> Iterator[dict]:
    """`check(row)` of every row, streamed: an example dict is yielded, a string is a problem of that row
    (reported with its `where`, first few and total, when the rows are exhausted or the generator is closed
    early). The rows' own errors (a reader's) come first: they are raised from the inner generator."""
    errors = DataErrors(what)
    try:
        for row in rows:
            result = check(row)
            if isinstance(result, str):
                errors.add(row["where"], result)
            else:
                yield result
    except GeneratorExit:
        if hasattr(rows, "close"):
            rows.close()
        errors.raise_if_any(fix=fix)
        raise
    errors.raise_if_any(fix=fix)


def json_object(line: str) -> dict | None:
    """The JSON object on a `predict` input line, or None when the line is not one (then it is plain text)."""
    if not line.lstrip().startswith("{"):
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None
