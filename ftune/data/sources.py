"""Where a task's examples come from: local files (which win when any is set) or a hub dataset.

Every task reads its splits through `load_split`, so the choice of source, the `max_<split>` limits and
the offline behaviour (fail fast, one line, no 25 s of retries) are the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftune.errors import FtuneError

SPLITS = ("train", "validation", "test")


def load_split(data: Any, split: str, from_file: Callable[[str, str], list[dict]],
               from_hub: Callable[[Any, str], list[dict]], formats: str) -> list[dict]:
    """Examples of `split`: from `task.data.<split>` when local files are configured, else from the hub."""
    if any(data.get(s) for s in SPLITS):
        path = data.get(split)
        examples = from_file(path, f"task.data.{split}") if path else []
    elif data.get("hub"):
        dataset = hub_split(data, split, formats)
        examples = from_hub(dataset, split) if dataset is not None else []
    else:
        raise FtuneError("no data configured", where="task.data",
                         fix=f"set task.data.train/validation/test to {formats} files, or task.data.hub")
    limit = data.get(f"max_{split}")
    return examples[:limit] if limit else examples


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
