"""Where a task's examples come from: local files (which win when any is set) or a hub dataset.

Every task reads its splits through `load_split`, so the choice of source, the `max_<split>` limits and
the offline behaviour (fail fast, one line, no 25 s of retries) are the same for all of them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from ftune.data.examples import stored
from ftune.errors import FtuneError
from ftune.paths import existing_file

log = logging.getLogger("ftune")

SPLITS = ("train", "validation", "test")


def load_split(data: Any, split: str, from_file: Callable[[str, str], list[dict]],
               from_hub: Callable[[Any, str], list[dict]], formats: str) -> list[dict]:
    """Examples of `split`: from `task.data.<split>` when local files are configured, else from the hub."""
    limit = data.get(f"max_{split}")
    if any(data.get(s) for s in SPLITS):
        path = data.get(split)
        if not path:
            return []
        return load_path(path, f"task.data.{split}", from_file, limit, split)
    elif data.get("hub"):
        return load_hub(data, split, from_hub, formats, limit)
    raise FtuneError("no data configured", where="task.data",
                     fix=f"set task.data.train/validation/test to {formats} files, or task.data.hub")


def load_hub(data: Any, split: str, from_hub: Callable[[Any, str], Any], formats: str, limit: int | None):
    """A hub split's examples, stored like a file's: keyed by the dataset's fingerprint (which `datasets`
    derives from its cached Arrow files), written in chunks from `from_hub`'s generator and memory-mapped.
    `from_hub` runs at once (its set-up, e.g. the class names of a ClassLabel column, is needed on a hit
    too); the rows it returns are only read when the entry is missing."""
    dataset = hub_split(data, split, formats)
    if dataset is None:
        return []
    rows = from_hub(dataset, split)
    version = getattr(dataset, "_fingerprint", None)
    if version is None:  # not a cached datasets.Dataset: in memory, as before
        rows = list(rows)
        return rows[:limit] if limit else rows

    def read():
        return limited(rows, limit) if limit else rows

    settings = {**reader_settings(from_hub), "hub": data.hub, "hub_config": data.get("hub_config"),
                "split": split, "limit": limit}
    try:
        return stored(f"{data.hub}/{split}", settings, read, split, digest=f"hub:{version}")
    except OSError as error:
        log.debug("examples of %s/%s not stored (%s)", data.hub, split, error)
        return list(read())


def load_path(path: str, key: str, from_file: Callable[[str, str], Any], limit: int | None = None,
              name: str = "file"):
    """The examples `from_file` reads (a generator: streamed) from `path`, stored once per file version as
    a memory-mapped Arrow file (data.examples); an in-memory list where that cannot be written."""
    existing_file(path, key)

    def read():
        rows = from_file(path, key)
        return limited(rows, limit) if limit else rows

    try:
        return stored(path, {**reader_settings(from_file), "path": path, "limit": limit}, read, name)
    except OSError as error:  # no writable cache: read into memory, as without one
        log.debug("examples of %s not stored (%s)", path, error)
        return list(read())


def limited(rows, limit: int):
    """The first `limit` rows; a generator is then closed, so it reports the errors in the part it read."""
    yield from itertools.islice(rows, limit)
    if hasattr(rows, "close"):
        rows.close()


def reader_settings(from_file: Callable) -> dict:
    """What decides how a file becomes examples: the reading object's class and its config without the
    split paths (a sequence task's data reader parses labels with its task's method: that task counts)."""
    from omegaconf import OmegaConf

    owner = getattr(from_file, "__self__", None)
    parse = getattr(owner, "parse", None)
    owner = getattr(parse, "__self__", owner)
    cfg = getattr(owner, "cfg", None)
    settings = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else {}
    data = settings.get("data", settings)
    for name in SPLITS:
        data.pop(name, None)
    return {"reader": f"{type(owner).__qualname__}.{getattr(from_file, '__name__', '')}", "cfg": settings}


def hub_split(data: Any, split: str, formats: str):
    """A split of `data.hub` as a datasets.Dataset (None if the dataset has no such split)."""
    import datasets

    from ftune.models import hub_available

    if not hub_available():
        datasets.config.HF_HUB_OFFLINE = True  # use the local cache only
    name = (data.get("hub_splits") or {}).get(split, split)  # MNLI: validation → validation_matched
    try:
        if name not in datasets.get_dataset_split_names(data.hub, data.get("hub_config")):
            return None
        return datasets.load_dataset(data.hub, data.get("hub_config"), split=name)
    except Exception as error:  # offline, unknown name, missing config: all mean "cannot load it"
        raise FtuneError(f"cannot load dataset `{data.hub}` from the Hugging Face hub or its cache "
                         f"({type(error).__name__})", where="task.data.hub",
                         fix=f"offline, point task.data.train/validation/test at local {formats} files") from error
