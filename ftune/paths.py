"""Resolve user paths, including `pkg:<package>/<path>` for files shipped inside installed packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ftune.errors import FtuneError


def resolve(path: str, key: str | None = None) -> Path:
    """Return a filesystem path for `path`, expanding `pkg:` prefixes; the file need not exist."""
    if not path.startswith("pkg:"):
        return Path(path).expanduser()
    package, _, inner = path[len("pkg:"):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FtuneError(f"package `{package}` is not installed", where=key or path,
                         fix=f"pip install {package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def existing_file(path: str, key: str) -> Path:
    resolved = resolve(path, key)
    if not resolved.is_file():
        raise FtuneError(f"file not found: {path}", where=key, fix="check the path (relative to the current directory)")
    return resolved


def cache_root() -> Path:
    """$FTUNE_CACHE_DIR (default ~/.cache/ftune). Its subfolders (features, digests, ...) belong to the modules
    that fill them; the root is here, below them all, so that none imports another to find it."""
    return Path(os.environ.get("FTUNE_CACHE_DIR", Path.home() / ".cache" / "ftune"))
