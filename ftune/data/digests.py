"""Digests of data files, computed once per file version and remembered by (size, mtime, inode).

A cache key built from these costs a `stat` per file when nothing changed; a file that was edited (even
one byte, even with its mtime restored by a copy tool, since size or inode then usually differ) is
read and hashed again. The memo lives next to the feature cache, one small JSON file per path.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path


def _memo_dir() -> Path:
    # the cache root comes from ftune.paths, not ftune.data.cache: the feature cache imports this module
    from ftune.paths import cache_root

    return cache_root() / "digests"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (hex), from the memo when the file's size, mtime and inode are unchanged."""
    from ftune.paths import resolve

    real = resolve(str(path)).resolve()
    info = real.stat()
    stamp = [info.st_size, info.st_mtime_ns, info.st_ino]
    memo = _memo_dir() / (hashlib.sha256(str(real).encode()).hexdigest()[:32] + ".json")
    try:
        saved = json.loads(memo.read_text())
        if saved.get("stamp") == stamp:
            return saved["sha256"]
    except (OSError, ValueError, AttributeError):
        pass  # no memo yet, or a damaged one: hash again
    with open(real, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if real.stat().st_mtime_ns == info.st_mtime_ns:  # not remembered when the file changed while being read
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f".{memo.name}.{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps({"path": str(real), "stamp": stamp, "sha256": digest}))
            os.replace(tmp, memo)
        except OSError:  # a read-only cache: correct, only slower next time
            pass
    return digest
