"""Examples of a local data file kept on disk: an Arrow file written once per file version, memory-mapped.

A reader's examples (a generator, so a large file is never a whole Python list, or a list) are written in
chunks to an Arrow stream file keyed by the file's byte digest and the reader settings; the next run with
the same file and settings opens it memory-mapped instead of parsing the file again. `Rows` is the
read-only sequence the tasks see: `len`, `rows[i]`, `rows[a:b]`, and iteration in chunks, each giving the
plain dicts the reader produced. Every chunk is checked to read back exactly as written; examples that do
not (tuples, rows with differing keys) stay an in-memory list, as before.

Source locations are kept compact: when every `where` is "<file>:<line>" of the file read (the CoNLL,
CSV/TSV and JSONL readers), the entry stores the line as an int32 column and the file once, in the schema's
metadata, and `Rows` gives each example its `where` string back; other locations (SQuAD's JSON paths)
stay strings.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("ftune")
VERSION = 2  # 2: `where` as a line-number column + the file in the schema metadata
CHUNK = 5000
LINE, PREFIX = "where_line", b"ftune.where_prefix"  # the compact form of `where`


class Rows:
    """A memory-mapped Arrow table of examples, seen as a sequence of dicts."""

    def __init__(self, table: Any):
        self.table, self.key = table, None
        prefix = (table.schema.metadata or {}).get(PREFIX)
        self.prefix = prefix.decode() if prefix is not None and LINE in table.column_names else None

    def __len__(self) -> int:
        return self.table.num_rows

    def __bool__(self) -> bool:
        return self.table.num_rows > 0

    def __getitem__(self, key: int | slice):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return Rows(self.table.slice(start, max(0, stop - start)))
        if key < 0:
            key += len(self)
        if not 0 <= key < len(self):
            raise IndexError(key)
        return self._located(self.table.slice(key, 1).to_pylist())[0]

    def __iter__(self):
        for batch in self.table.to_batches(max_chunksize=1000):
            yield from self._located(batch.to_pylist())

    def _located(self, rows: list[dict]) -> list[dict]:
        """Rows with `where` as the reader wrote it (from the compact line column), at its place among the keys."""
        if self.prefix is None:
            return rows
        prefix = self.prefix
        return [{("where" if k == LINE else k): (f"{prefix}{v}" if k == LINE else v) for k, v in row.items()}
                for row in rows]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rows | list) and list(self) == list(other)

    __hash__ = None

    def column(self, name: str):
        """One column as Arrow data (for vectorised checks), without building Python objects."""
        return self.table.column(name)


def entry_dir() -> Path:
    from ftune.data.cache import cache_dir

    return cache_dir().parent / "examples"


def stored(path: str, settings: dict, read: Callable[[], Iterable[dict]], name: str,
           digest: str | None = None) -> Rows | list[dict]:
    """The examples `read()` gives for the file at `path`, from the on-disk entry when there is one.
    `digest` stands for the data's version when `path` is no file (a hub split: its dataset fingerprint)."""
    from ftune.data.digests import file_digest

    version = digest or file_digest(path)
    key = hashlib.sha256(json.dumps({"version": VERSION, "file": version, "settings": settings},
                                    sort_keys=True, default=str).encode()).hexdigest()[:32]
    rows = _stored(path, key, read, name)
    if isinstance(rows, Rows):
        rows.key = key  # what the examples are, for the feature cache's key (no need to hash every example)
    return rows


def _stored(path: str, key: str, read: Callable[[], Iterable[dict]], name: str) -> Rows | list[dict]:
    from filelock import FileLock

    folder = entry_dir() / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "examples.arrow").is_file():
            try:
                return _open(folder)
            except Exception as error:  # damaged: read the file again
                log.warning("ignoring unreadable examples entry %s (%s)", folder, error)
                shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        tmp = folder.with_name(f".tmp-{key}-{uuid.uuid4().hex[:8]}")
        try:
            written = _write(read(), tmp, f"{path}:")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if isinstance(written, list):  # not representable exactly in Arrow: kept in memory as before
            shutil.rmtree(tmp, ignore_errors=True)
            return written
        try:
            os.replace(tmp, folder)
        except OSError:
            return _open(tmp)
        log.info("%s: read %d examples in %.1f s", name, written, time.perf_counter() - started)
        return _open(folder)


def _open(folder: Path) -> Rows:
    import pyarrow as pa

    with pa.memory_map(str(folder / "examples.arrow")) as source:
        return Rows(pa.ipc.open_stream(source).read_all())  # zero-copy: the table points into the mapping


def _write(examples: Iterable[dict], folder: Path, prefix: str = "") -> int | list[dict]:
    """Write the examples in chunks; the count, or all examples as a list when a chunk does not round-trip.
    `where` values "<prefix><line>" are written as a line column when all of the first chunk's are."""
    import pyarrow as pa

    folder.mkdir(parents=True)
    iterator, schema, writer, count, compact = iter(examples), None, None, 0, None
    with pa.OSFile(str(folder / "examples.arrow"), "wb") as sink:
        while chunk := list(itertools.islice(iterator, CHUNK)):
            if compact is None:
                compact = bool(prefix) and all(_line(row, prefix) is not None for row in chunk)
            rows = [_compact(row, prefix) for row in chunk] if compact else chunk
            try:
                exact = None not in rows  # a row of a compact file without a line location: keep in memory
                if exact:
                    table = pa.Table.from_pylist(rows, schema=schema)
                    exact = table.to_pylist() == rows
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
                exact = False
            if exact and schema is None and compact:  # the file once, in the metadata; lines as int32
                lines = table.column(LINE).cast(pa.int32())
                table = table.set_column(table.schema.get_field_index(LINE), LINE, lines)
                table = table.replace_schema_metadata({PREFIX: prefix.encode()})
            if not exact:
                if writer is not None:
                    writer.close()
                kept = [] if writer is None else _open_partial(folder)
                return [*kept, *chunk, *iterator]
            if writer is None:
                schema, writer = table.schema, pa.ipc.new_stream(sink, table.schema)
            writer.write_table(table)
            count += len(chunk)
        if writer is None:  # no examples: an empty entry still needs a schema
            writer = pa.ipc.new_stream(sink, pa.schema([]))
        writer.close()
    return count


def _line(row: dict, prefix: str) -> int | None:
    """The line number of a `where` "<prefix><line>", or None when the row's location is not one."""
    where = row.get("where")
    if isinstance(where, str) and where.startswith(prefix) and where[len(prefix):].isdigit() and LINE not in row:
        line = int(where[len(prefix):])
        return line if line < 2**31 else None
    return None


def _compact(row: dict, prefix: str) -> dict | None:
    """The row with its `where` as a line number (None when this row's location does not have the form)."""
    line = _line(row, prefix)
    if line is None:
        return None
    return {(LINE if k == "where" else k): (line if k == "where" else v) for k, v in row.items()}


def _open_partial(folder: Path) -> list[dict]:
    """Examples already written before a chunk that did not round-trip (rare: mixed shapes in one file)."""
    return list(_open(folder))
