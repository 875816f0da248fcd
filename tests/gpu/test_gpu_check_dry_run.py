"""scripts/gpu_check.sh without CUDA (not marked gpu: it runs in `make test`), so the script does not rot
between GPU runs: it installs nothing, runs the gpu tier (which skips), skips the bench, and writes its
summary with "cuda": false."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs scripts/gpu_check.sh in a subprocess: make test, not make test-unit

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_writes_the_summary(tmp_path):
    out = tmp_path / "out"
    wheels = tmp_path / "wheels"  # a wheel that must not be installed without CUDA (it is not even one)
    wheels.mkdir()
    (wheels / "not_installed-0.0.0-py3-none-any.whl").write_bytes(b"not a wheel")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(wheels),
           "GPU_TIER_TIMEOUT": "120"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["cuda"] is False and summary["ok"] is True
    assert summary["wheels_installed"] == [] and "no wheels installed" in done.stdout
    assert summary["bench"] == {"skipped": "no CUDA"} and not (out / "bench.json").exists()
    tier = summary["tier"]
    assert tier["exit_code"] == 0 and tier["collected"] >= 10  # the floor for the tier
    assert tier["skipped"] == tier["collected"] and tier["failed"] == tier["errors"] == 0
    assert list(tier["skip_reasons"]) == ["no CUDA GPU here: the gpu tier runs on a GPU machine "
                                          "(scripts/gpu_check.sh, docs/gpu.md)"]
    versions = summary["versions"]
    assert versions["gpu"] is None and versions["torch"]
    # the source tree ran, not an installed copy: configs/ served as ftune.configs
    assert Path(versions["ftune_from"]) == REPO / "ftune" / "__init__.py"
    assert Path(versions["ftune_configs_from"]) == REPO / "configs" / "__init__.py"
    log = (out / "gpu_check.log").read_text()
    assert "bench skipped: no CUDA" in log and '"cuda": false' not in log and "ok: True" in log
