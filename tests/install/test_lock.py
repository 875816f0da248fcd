"""requirements.lock pins every package of the environment `make install` builds (no unpinned package slips in)."""

from __future__ import annotations

import os
import re
import sysconfig
from importlib import metadata

import pytest

from tests.conftest import REPO


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][\w.-]*)==(\S+)", line)
        if match:
            pins[_canonical(match.group(1))] = match.group(2)
    return pins


@pytest.mark.skipif(os.environ.get("FTUNE_UNLOCKED") == "1", reason="make test-latest: newest versions, not the lock")
def test_every_installed_package_is_locked_at_its_version():
    locked = _locked()
    # the installed environment: site-packages, not what an import put on sys.path later (setuptools, once
    # imported, e.g. by torch's inductor in a compile test, adds its _vendor folder with its own copies)
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=site)}
    installed.pop("ftune", None)  # the project itself, installed editable
    # a local build label (torch 2.13.0+cpu) is the same release as the lock's plain version
    wrong = {name: (version, locked.get(name)) for name, version in installed.items()
             if locked.get(name) != version.split("+")[0]}
    assert not wrong, f"installed (version, locked) that the lock does not match: {wrong}; run `make install` (a package the lock no longer names: rm -rf .venv first)"


def test_lock_pins_the_core_libraries():
    locked = _locked()
    for name in ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "hydra-core"):
        assert name in locked, f"{name} is not pinned in requirements.lock"
    assert locked["torch"] == "2.13.0"  # the release on this disk; its CUDA builds match the same pin
