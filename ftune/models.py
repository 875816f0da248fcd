"""Load tokenizers and models from a hub id, a local folder, or a package shipping the weights.

Offline, hub ids fail fast with one line instead of huggingface_hub's 25 s of retries.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ftune.errors import FtuneError
from ftune.paths import resolve

log = logging.getLogger("ftune")


def locate(name_or_path: str, key: str = "model.name_or_path", allow_pickle: bool = False) -> str:
    """A local folder for `pkg:`/local paths, else the hub id unchanged (after a reachability check)."""
    path = resolve(name_or_path, key)
    if name_or_path.startswith("pkg:") or path.exists() or name_or_path.startswith((".", "/", "~")):
        if not path.is_dir():
            raise FtuneError(f"model folder not found: {path}", where=key,
                             fix="give a folder with config.json, or use model=minilm")
        if not allow_pickle:
            _refuse_pickle_only(path)
        return str(path)
    if _in_hf_cache(name_or_path) or hub_available():
        return name_or_path
    raise FtuneError(
        f"cannot reach the Hugging Face hub to download `{name_or_path}` and it is not in the local cache",
        where=key,
        fix="use model=minilm (ships with pip), or set model.name_or_path=<local model folder>",
    )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    if not getattr(tokenizer, "is_fast", False):
        raise FtuneError(f"`{name_or_path}` has no fast tokenizer", where="model.name_or_path",
                         fix="ftune needs offset mappings and word ids, which only fast tokenizers give")
    return tokenizer


def load_pretrained(auto_class, name_or_path: str, **kwargs: Any):
    """`auto_class.from_pretrained` with user-facing errors (missing files, offline hub)."""
    return _load(auto_class, name_or_path, **kwargs)


def _load(auto_class, name_or_path: str, **kwargs: Any):
    try:
        return auto_class.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FtuneError(f"cannot load `{name_or_path}`: {first}", where="model.name_or_path",
                         fix="check the name or folder; offline, use model=minilm or a local folder") from error


def _refuse_pickle_only(folder: Path) -> None:
    has_pickle = any(folder.glob("pytorch_model*.bin"))
    has_safetensors = any(folder.glob("*.safetensors"))
    if has_pickle and not has_safetensors:
        raise FtuneError(
            f"{folder} holds only pickle weights (pytorch_model*.bin), which can run code when loaded",
            where="model.name_or_path",
            fix="convert them to safetensors, or set model.allow_pickle=true if you trust the folder's origin",
        )


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def hub_available(timeout: float = 3.0) -> bool:
    """Whether the hub answers within `timeout` s (False at once with HF_HUB_OFFLINE=1)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
