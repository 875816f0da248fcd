"""On-disk cache of tokenised features, keyed by the data, the tokenizer and the task settings.

A second run over the same data with the same tokenizer and settings loads the features instead of
tokenising again (and says so). Features are stored with `datasets` (Arrow), never pickled. The cache
lives in $FTUNE_CACHE_DIR, default ~/.cache/ftune/features; entries are written to a temporary folder and
renamed into place under a file lock, so parallel jobs never read a half-written entry nor tokenise twice.
"""

from __future__ import annotations

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

log = logging.getLogger("ftune")
FORMAT_VERSION = 1  # bump when a task's feature layout changes


def cache_dir() -> Path:
    return Path(os.environ.get("FTUNE_CACHE_DIR", Path.home() / ".cache" / "ftune")) / "features"


def fingerprint(task: Any, examples: list[dict], tokenizer: Any) -> str:
    digest = hashlib.sha256()
    settings = OmegaConf.to_container(task.cfg, resolve=True) if OmegaConf.is_config(task.cfg) else dict(task.cfg)
    settings.pop("data", None)  # file names do not matter: the examples themselves are hashed below
    digest.update(json.dumps({"version": FORMAT_VERSION, "task": task.name, "settings": settings,
                              "labels": task.labels, "class": type(tokenizer).__name__,
                              # sft renders with it: two models may share a vocabulary but not a template
                              "chat_template": getattr(tokenizer, "chat_template", None)}, sort_keys=True).encode())
    digest.update(tokenizer.backend_tokenizer.to_str().encode() if hasattr(tokenizer, "backend_tokenizer")
                  else repr(sorted(tokenizer.get_vocab().items())).encode())
    for example in examples:
        digest.update(json.dumps({k: v for k, v in example.items() if k != "where"}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def featurize(task: Any, examples: list[dict], tokenizer: Any, name: str, enabled: bool = True) -> list[dict]:
    """task.featurize with the on-disk cache in front of it.

    A file lock per entry makes parallel jobs and torchrun ranks tokenise the same data once: the first
    process tokenises and stores, the others wait on the lock and load. Waiting on a file lock is no
    collective operation, so a tokenisation that takes an hour trips no NCCL/gloo timeout.
    """
    if not enabled or not examples:
        return task.featurize(examples, tokenizer)
    from filelock import FileLock, Timeout

    folder = cache_dir() / f"{task.name}-{fingerprint(task, examples, tokenizer)}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s: another process is tokenising the same data; waiting for its cache entry", name)
        lock.acquire()  # no timeout: if the holder dies the OS frees the lock and this process tokenises
    try:
        return _load_or_build(task, examples, tokenizer, name, folder)
    finally:
        lock.release()


def _load_or_build(task: Any, examples: list[dict], tokenizer: Any, name: str, folder: Path) -> list[dict]:
    import datasets

    started = time.perf_counter()
    if (folder / "dataset_info.json").is_file():
        try:
            features = datasets.load_from_disk(str(folder)).to_list()
            task.bind_tokenizer(tokenizer)
            log.info("%s: %d features loaded from the cache in %.1f s (%s)", name, len(features),
                     time.perf_counter() - started, folder)
            return features
        except Exception as error:  # a damaged entry is rebuilt, never trusted
            log.warning("%s: ignoring unreadable cache entry %s (%s)", name, folder, error)
            shutil.rmtree(folder, ignore_errors=True)
    features = task.featurize(examples, tokenizer)
    log.info("%s: tokenised %d examples into %d features in %.1f s", name, len(examples), len(features),
             time.perf_counter() - started)
    tmp = folder.with_name(f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        datasets.Dataset.from_list(features).save_to_disk(str(tmp))
        os.replace(tmp, folder)
    except OSError:  # a read-only disk, or an entry stored without the lock (older ftune): both are fine
        shutil.rmtree(tmp, ignore_errors=True)
    return features
