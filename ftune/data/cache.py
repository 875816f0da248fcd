"""Tokenised features on disk: built in parallel, memory-mapped, and cached by the data, tokenizer and settings.

Features are written as Arrow shards and read back memory-mapped (`datasets.Dataset.from_file`), so a split
of millions of features costs page cache, not Python objects. Several processes tokenise contiguous
ranges of examples (fork: they inherit task, examples and tokenizer, nothing is pickled); the shards are
read back in order, so the features do not depend on the number of processes.

A second run over the same data with the same tokenizer and settings loads the features instead of
tokenising again (and says so). The key of a local file is a digest of its bytes, remembered by path,
size, mtime and inode: an unchanged file costs a stat, one changed byte is a miss. The cache lives in
$FTUNE_CACHE_DIR, default ~/.cache/ftune/features; entries are written to a temporary folder and renamed
into place under a file lock, so parallel jobs never read a half-written entry nor tokenise twice.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ftune.data import digests
from ftune.paths import cache_root

log = logging.getLogger("ftune")
# 2: Arrow shards written in parallel + meta.json (was: one save_to_disk folder); keys from file digests
FORMAT_VERSION = 2
CHUNK = 2000  # examples per featurize call and per Arrow record batch: bounds a worker's memory
_JOB: dict = {}  # what forked workers inherit: task, examples, tokenizer, schema, folder


def cache_dir() -> Path:
    return cache_root() / "features"


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fingerprint(task: Any, examples: Any, tokenizer: Any, source: str | None = None) -> str:
    """The cache key. With `source` (the local file the examples were read from) its byte digest stands
    for the examples, for examples stored on disk (hub splits) their entry's key; else (in-memory examples)
    every example is hashed."""
    digest = hashlib.sha256()
    settings = OmegaConf.to_container(task.cfg, resolve=True) if OmegaConf.is_config(task.cfg) else dict(task.cfg)
    data = dict(settings.pop("data", None) or {})
    for split in ("train", "validation", "test"):  # file names do not matter, their bytes do
        data.pop(split, None)
    digest.update(json.dumps({"version": FORMAT_VERSION, "task": task.name, "settings": settings,
                              "data": data if source else None, "labels": task.labels,
                              "fitted": task.scheme, "class": type(tokenizer).__name__,
                              # sft renders with it: two models may share a vocabulary but not a template
                              "chat_template": getattr(tokenizer, "chat_template", None)},
                             sort_keys=True, default=str).encode())
    digest.update(tokenizer_digest(tokenizer).encode())
    if source:
        digest.update(digests.file_digest(source).encode())
        digest.update(str(len(examples)).encode())
    elif getattr(examples, "key", None):  # examples stored on disk (a hub split): their entry's key says what they are
        digest.update(f"examples:{examples.key}:{len(examples)}".encode())
    else:
        for example in examples:
            digest.update(json.dumps({k: v for k, v in example.items() if k != "where"}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def local_source(data: Any, split: str) -> str | None:
    """The local file a split is read from (see sources.load_split), or None (hub, or not configured)."""
    if any(data.get(s) for s in ("train", "validation", "test")):
        return data.get(split) or None
    return None


def tokenizer_digest(tokenizer: Any) -> str:
    """Digest of the tokenizer's full definition, computed once per tokenizer object (it is ~1 MB of JSON)."""
    cached = getattr(tokenizer, "_ftune_digest", None)
    if cached is None:
        text = (tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer")
                else repr(sorted(tokenizer.get_vocab().items())))
        cached = hashlib.sha256(text.encode()).hexdigest()
        try:
            tokenizer._ftune_digest = cached
        except AttributeError:
            pass
    return cached


def featurize(task: Any, examples: Any, tokenizer: Any, name: str, enabled: bool = True,
              source: str | None = None, workers: int = 0):
    """task.featurize over all examples, as a memory-mapped `datasets.Dataset` ([] for no examples).

    `workers` processes tokenise (0: one per available core). A file lock per entry makes parallel jobs
    and torchrun ranks tokenise the same data once: the first process tokenises and stores, the others
    wait on the lock and load. Waiting on a file lock is no collective operation, so a tokenisation that
    takes an hour trips no NCCL/gloo timeout. With `enabled` false the entry is private and removed at exit.
    """
    task.bind_tokenizer(tokenizer)
    if not len(examples):
        return []
    workers = workers or available_cores()
    if not enabled:
        folder = cache_dir() / f".private-{uuid.uuid4().hex}"
        atexit.register(shutil.rmtree, folder, True)
        return _build(task, examples, tokenizer, name, folder, workers)
    from filelock import FileLock, Timeout

    folder = cache_dir() / f"{task.name}-{fingerprint(task, examples, tokenizer, source)}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s: another process is tokenising the same data; waiting for its cache entry", name)
        lock.acquire()  # no timeout: if the holder dies the OS frees the lock and this process tokenises
    try:
        return _load_or_build(task, examples, tokenizer, name, folder, workers)
    finally:
        lock.release()


def _load_or_build(task: Any, examples: Any, tokenizer: Any, name: str, folder: Path, workers: int = 0):
    started = time.perf_counter()
    if (folder / "meta.json").is_file():
        try:
            features = open_entry(folder)
            log.info("%s: %d features loaded from the cache in %.1f s (%s)", name, len(features),
                     time.perf_counter() - started, folder)
            return features
        except Exception as error:  # a damaged entry is rebuilt, never trusted
            log.warning("%s: ignoring unreadable cache entry %s (%s)", name, folder, error)
            shutil.rmtree(folder, ignore_errors=True)
    tmp = folder.with_name(f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        _build(task, examples, tokenizer, name, tmp, workers or available_cores())
        os.replace(tmp, folder)
    except OSError:  # a read-only disk, or an entry stored by a process without the lock: read it where it is
        if not (folder / "meta.json").is_file():
            return open_entry(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    return open_entry(folder)


def open_entry(folder: Path):
    """The memory-mapped features of an entry: its shards in order, as one dataset."""
    import datasets

    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"format version {meta.get('version')}, expected {FORMAT_VERSION}")
    parts = [datasets.Dataset.from_file(str(folder / shard)) for shard in meta["shards"]]
    features = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if len(features) != meta["features"]:
        raise ValueError(f"{len(features)} features, meta.json says {meta['features']}")
    return features


def _build(task: Any, examples: Any, tokenizer: Any, name: str, folder: Path, workers: int):
    """Tokenise into Arrow shards under `folder` (one contiguous range of examples per shard) and open them."""
    import pyarrow as pa

    started = time.perf_counter()
    folder.mkdir(parents=True)
    total = len(examples)
    # The first examples are featurised here: their schema is every shard's (so shards concatenate),
    # and a setting that fails (max_length too small, ...) fails once, in this process.
    head = _featurize_range(task, examples, tokenizer, 0, min(total, 64))
    schema = pa.Table.from_pylist(head).schema if head else None
    # without a schema (the first examples gave no feature) one process infers it from what comes
    processes = max(1, min(workers, total // CHUNK)) if schema is not None else 1
    bounds = [round(total * i / processes) for i in range(processes + 1)]
    ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
    _JOB.update(task=task, examples=examples, tokenizer=tokenizer, schema=schema, folder=folder)
    try:
        if processes == 1:
            results = [_write_shard((0, 0, total))]
        else:
            import multiprocessing

            # fork: the workers inherit the job; nothing (not the examples, not the tokenizer) is pickled
            with multiprocessing.get_context("fork").Pool(processes, initializer=_quiet_tokenizers) as pool:
                results = pool.map(_write_shard, [(i, start, end) for i, (start, end) in enumerate(ranges)],
                                   chunksize=1)
    finally:
        _JOB.clear()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    shards = [shard for shard, count in results if count]
    count = sum(count for _, count in results)
    if not shards:  # no example gave a feature: an empty table still needs a file to open
        raise ValueError(f"{name}: {total} examples gave no features")
    (folder / "meta.json").write_text(json.dumps({"version": FORMAT_VERSION, "shards": shards, "features": count,
                                                  "examples": total}))
    seconds = time.perf_counter() - started
    log.info("%s: tokenised %d examples into %d features in %.1f s (%.0f examples/s, %d process%s)", name, total,
             count, seconds, total / max(seconds, 1e-9), processes, "es" if processes > 1 else "")
    return open_entry(folder)


def _quiet_tokenizers() -> None:
    # a forked child must not start the Rust tokenizer's own thread pool (it would warn, or deadlock)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _featurize_range(task: Any, examples: Any, tokenizer: Any, start: int, end: int) -> list[dict]:
    """Features of examples[start:end], with `example` numbered in the whole split."""
    chunk = examples[start:end]
    features = task.featurize(chunk if isinstance(chunk, list) else list(chunk), tokenizer)
    if start:
        for feature in features:
            feature["example"] += start
    return features


def _write_shard(job: tuple[int, int, int]):
    """Featurise examples[start:end] chunk by chunk into one Arrow stream file: (file name, features)."""
    import pyarrow as pa

    index, start, end = job
    task, examples, tokenizer, schema = _JOB["task"], _JOB["examples"], _JOB["tokenizer"], _JOB["schema"]
    shard, count = f"shard-{index:05d}.arrow", 0
    try:
        with pa.OSFile(str(_JOB["folder"] / shard), "wb") as sink:
            writer = pa.ipc.new_stream(sink, schema) if schema is not None else None
            for first in range(start, end, CHUNK):
                features = _featurize_range(task, examples, tokenizer, first, min(first + CHUNK, end))
                if not features:
                    continue
                table = pa.Table.from_pylist(features, schema=schema)
                if writer is None:
                    schema, writer = table.schema, pa.ipc.new_stream(sink, table.schema)
                writer.write_table(table)
                count += len(features)
            if writer is not None:
                writer.close()
    except Exception as error:  # returned, not raised: the parent re-raises it after the pool closed
        return error
    return shard, count
