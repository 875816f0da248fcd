"""Examples of a local data file kept on disk: an Arrow file written once per file version, memory-mapped.

A reader's examples (a generator, so a large file is never a whole Python list, or a list) are written in
chunks to an Arrow stream file keyed by the file's byte digest and the reader settings; the next run with
the same file and settings opens it memory-mapped instead of parsing the file again. `Rows` is the
read-only sequence the tasks see: `len`, `rows[i]`, `rows[a:b]`, and iteration in chunks, each giving the
plain dicts the reader produced. Every chunk is checked to read back exactly as written; examples that do
not (tuples, rows with differing keys) stay an in-memory list, as before.
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
VERSION = 1
CHUNK = 5000


class Rows:
    """A memory-mapped Arrow table of examples, seen as a sequence of dicts."""

    def __init__(self, table: Any):
        self.table = table

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
        return self.table.slice(key, 1).to_pylist()[0]

    def __iter__(self):
        for batch in self.table.to_batches(max_chunksize=1000):
            yield from batch.to_pylist()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rows | list) and list(self) == list(other)

    __hash__ = None

    def column(self, name: str):
        """One column as Arrow data (for vectorised checks), without building Python objects."""
        return self.table.column(name)


def entry_dir() -> Path:
    from ftune.data.cache import cache_dir

    return cache_dir().parent / "examples"


def stored(path: str, settings: dict, read: Callable[[], Iterable[dict]], name: str) -> Rows | list[dict]:
    """The examples `read()` gives for the file at `path`, from the on-disk entry when there is one."""
    from filelock import FileLock

    from ftune.data.digests import file_digest

    key = hashlib.sha256(json.dumps({"version": VERSION, "file": file_digest(path), "settings": settings},
                                    sort_keys=True, default=str).encode()).hexdigest()[:32]
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
            written = _write(read(), tmp)
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


def _write(examples: Iterable[dict], folder: Path) -> int | list[dict]:
    """Write the examples in chunks; the count, or all examples as a list when a chunk does not round-trip."""
    import pyarrow as pa

    folder.mkdir(parents=True)
    iterator, schema, writer, count = iter(examples), None, None, 0
    with pa.OSFile(str(folder / "examples.arrow"), "wb") as sink:
        while chunk := list(itertools.islice(iterator, CHUNK)):
            try:
                table = pa.Table.from_pylist(chunk, schema=schema)
                exact = table.to_pylist() == chunk
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
                exact = False
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


def _open_partial(folder: Path) -> list[dict]:
    """Examples already written before a chunk that did not round-trip (rare: mixed shapes in one file)."""
    return list(_open(folder))
