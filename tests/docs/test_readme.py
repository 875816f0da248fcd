"""README.md is a short guide whose runnable commands work as written, and no page links to a missing file.

A fenced block whose info string is `bash runnable` is run, block after block, in one temporary copy of the
repository (so relative paths such as `ftune/demo_data/...` hold and the checkout is left clean), with `ftune`
defined as this interpreter's `python -m ftune` and the hub offline. The convention is described in
docs/development.md ("The README's commands are tested").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAX_README_LINES = 250
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "runs",
    "multirun",
    "outputs",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
)


def runnable_blocks(text: str) -> list[str]:
    """the bodies of the fenced blocks marked ```bash runnable, in order"""
    return [body for info, body in FENCE.findall(text) if info.split() == ["bash", "runnable"]]


def relative_links(text: str) -> list[str]:
    """link targets that are files of this repository (no scheme, no pure #anchor), anchors cut off"""
    text = FENCE.sub("", text)  # links inside code blocks are examples, not links
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_the_marker_is_found():
    blocks = runnable_blocks(
        "intro\n```bash runnable\nftune train\n```\n```bash\nftune serve\n```\n```\nx\n```\n"
    )
    assert blocks == ["ftune train\n"]
    assert relative_links("[a](docs/x.md#y) [b](https://h.io) [c](#z)\n```\n[d](no.md)\n```\n") == [
        "docs/x.md"
    ]


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; the guide keeps to {MAX_README_LINES}"
    )
    text = "\n".join(lines)
    assert "make test" in text and "make demo" in text
    assert runnable_blocks(text), "README.md has no ```bash runnable block"


def test_every_relative_link_points_to_a_file():
    pages = [README, *sorted((REPO / "docs").rglob("*.md"))]
    # pages that other branches write, linked before they land
    pending = {REPO / "docs" / "extending.md", REPO / "docs" / "gpu.md"}
    missing = [
        f"{page.relative_to(REPO)}: {target}"
        for page in pages
        for target in relative_links(page.read_text())
        if not (page.parent / target).exists() and (page.parent / target).resolve() not in pending
    ]
    assert not missing, "links to missing files:\n" + "\n".join(missing)


@pytest.mark.slow
def test_readme_runnable_commands_run_as_written(tmp_path):
    blocks = runnable_blocks(README.read_text())
    work = tmp_path / "repo"
    shutil.copytree(REPO, work, ignore=COPY_IGNORE)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NO_COLOR": "1",
        "FTUNE_CACHE_DIR": str(tmp_path / "cache"),
        # `python -m` would put the working directory (the copy) first on sys.path: use the installed ftune
        "PYTHONSAFEPATH": "1",
    }
    prelude = f'set -euo pipefail\nftune() {{ "{sys.executable}" -m ftune "$@"; }}\n'
    for number, block in enumerate(blocks, 1):
        result = subprocess.run(
            ["bash", "-c", prelude + block], cwd=work, env=env, capture_output=True, text=True, timeout=1800
        )
        assert result.returncode == 0, (
            f"README runnable block {number} failed (exit {result.returncode}):\n{block}\n"
            f"--- stderr (end) ---\n{result.stderr[-4000:]}\n--- stdout (end) ---\n{result.stdout[-2000:]}"
        )
    assert (work / "runs" / "first" / "best").is_dir()
    assert (work / "ner-merged").is_dir()
    assert list((work / "multirun").glob("*/summary.csv"))
