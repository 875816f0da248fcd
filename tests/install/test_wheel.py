"""The wheel ships every config YAML and the demo data by declaration (pyproject's package list), and
building it prints no warning about the project's own metadata (issue 26: a deprecated license table and
undeclared config folders printed hundreds of lines on `make install`); installed from that wheel, ftune runs
from any directory with its configs."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds the wheel in a subprocess: make test, not make test-unit

REPO = Path(__file__).resolve().parents[2]
# what setuptools says about a project's metadata; pip's own notes (e.g. byte-compiling disabled) are not it
METADATA_WARNINGS = ("SetuptoolsDeprecationWarning", "BuildBackendWarning", "is absent from the `packages`",
                     "is deprecated", "By 20")



def test_the_wheel_holds_every_config_and_the_demo_data_and_builds_quietly(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    output = build.stdout + build.stderr
    noisy = [line.strip() for line in output.splitlines() if any(w in line for w in METADATA_WARNINGS)]
    assert not noisy, "\n".join(noisy[:20])

    (wheel,) = tmp_path.glob("ftune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"ftune/configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*.yaml")}
    demo = {f"ftune/{p.relative_to(REPO / 'ftune').as_posix()}" for p in (REPO / "ftune" / "demo_data").rglob("*")
            if p.is_file() and p.suffix in (".conll", ".jsonl", ".txt")}
    assert len(configs) > 50 and demo
    assert not configs - names, sorted(configs - names)
    assert not demo - names, sorted(demo - names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()

    # installed from that wheel (not editable), ftune works from any directory: the configs are ftune.configs
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}
    info = subprocess.run([sys.executable, "-m", "ftune", "train", "--info", "searchpath"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)
    assert "pkg://ftune.configs" in info.stdout
    where = subprocess.run([sys.executable, "-c", "import ftune, ftune.configs; print(ftune.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(target))
