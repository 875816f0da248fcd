#!/usr/bin/env bash
# The whole GPU check in one command (docs/gpu.md):   scripts/gpu_check.sh OUTDIR
#
#  1. with CUDA, installs the wheels in .whl/ (`make gpu-wheels`, run where there is network) into a temporary
#     site directory: pip --no-index --no-deps --target, so the machine's torch and CUDA libraries stay;
#  2. runs this source tree without installing it (a tiny sitecustomize maps `ftune.configs` to configs/,
#     as pyproject.toml's package-dir does for an installed ftune);
#  3. prints the versions; runs the gpu test tier (`pytest -m gpu tests/gpu`) under a time limit;
#  4. with CUDA, runs scripts/bench.py --gpu-synthetic: a bert-base-sized model in bf16, built from a config
#     (no hub), through ftune and the Hugging Face Trainer: samples/s, tokens/s, MFU, peak memory;
#  5. writes OUTDIR/gpu_check.json (the summary), gpu_check.log (everything printed), gpu_tier.xml (JUnit),
#     bench.json and bench.md.
# Without CUDA (the dry run of tests/gpu/test_gpu_check_dry_run.py) it installs nothing, the tier skips,
# the bench is skipped, and the summary says "cuda": false. Exit status: 0 when the tier (and the bench,
# where it runs) passed, 1 otherwise.
#
# Environment: PYTHON (default python3), GPU_TIER_TIMEOUT (s, default 270), GPU_TIER_WORKERS (pytest-xdist
# workers on a GPU, default 3; 1: none), GPU_BENCH_TIMEOUT (s, default 150),
# GPU_CHECK_WHEELS (default <repo>/.whl), GPU_BENCH_ARGS (extra arguments for scripts/bench.py).
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: scripts/gpu_check.sh OUTDIR" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
OUTDIR=$(cd "$1" && pwd)
PY=${PYTHON:-python3}
TIER_TIMEOUT=${GPU_TIER_TIMEOUT:-270}
TIER_WORKERS=${GPU_TIER_WORKERS:-3}
BENCH_TIMEOUT=${GPU_BENCH_TIMEOUT:-150}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
STARTED=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ftune-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*"; }

main() {

# ---- the source tree, importable as installed: ftune.configs -> configs/ --------------------------------
mkdir -p "$WORK/shim" "$WORK/site"
cat >"$WORK/shim/sitecustomize.py" <<EOF
"""Written by scripts/gpu_check.sh: the source tree's configs/ is the package ftune.configs (as
pyproject.toml's package-dir maps it for an installed ftune), in this process and every one it starts."""
import importlib.machinery
import importlib.util
import os
import sys

_CONFIGS = os.path.join("$REPO", "configs")


class _FtuneConfigs:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "ftune.configs":
            return None
        return importlib.util.spec_from_file_location(name, os.path.join(_CONFIGS, "__init__.py"),
                                                      submodule_search_locations=[_CONFIGS])


sys.meta_path.insert(0, _FtuneConfigs)
# a sitecustomize this one hides (the interpreter's own) still runs
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if p and os.path.abspath(p) != _here])
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
EOF
export PYTHONPATH="$REPO:$WORK/shim:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export FTUNE_GPU_FACTS=$OUTDIR/gpu_facts.jsonl
: >"$FTUNE_GPU_FACTS"

# CUDA_VISIBLE_DEVICES set empty (the dry run): no CUDA, known without paying torch's import
if [ "${CUDA_VISIBLE_DEVICES-unset}" = "" ]; then
    CUDA=false
else
    CUDA=$("$PY" -c 'import torch; print("true" if torch.cuda.is_available() else "false")' 2>/dev/null || echo false)
fi
say "repo $REPO, python $PY, cuda $CUDA"

# ---- 1. wheels (only where CUDA is: the dry run installs nothing) ----------------------------------------
INSTALLED=""
if [ "$CUDA" = true ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    say "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $WORK/site"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        "$WHEELS"/*.whl; then
        INSTALLED=$(cd "$WHEELS" && ls *.whl | tr '\n' ' ')
    else
        say "pip install of the wheels failed: going on with what the machine has"
    fi
else
    say "no wheels installed (cuda $CUDA; wheels in $WHEELS: $(ls "$WHEELS"/*.whl 2>/dev/null | wc -l))"
fi

# ---- 2. versions -----------------------------------------------------------------------------------------
"$PY" - "$OUTDIR/versions.json" <<'EOF'
import json
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

names = ["torch", "transformers", "accelerate", "peft", "tokenizers", "safetensors", "hydra-core", "omegaconf",
         "datasets", "seqeval", "bitsandbytes", "fastapi", "uvicorn", "httpx", "onnx", "onnxscript", "onnxruntime",
         "rouge-score", "numpy", "pytest"]
found = {"python": platform.python_version()}
for name in names:
    try:
        found[name] = version(name)
    except PackageNotFoundError:
        found[name] = None
import torch

found["cuda"] = torch.version.cuda
found["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
if torch.cuda.is_available():
    free, total = torch.cuda.mem_get_info()
    found["gpu_memory_gib"] = round(total / 2**30, 1)
    found["bf16"] = torch.cuda.is_bf16_supported()
import ftune
import ftune.configs

found["ftune_from"] = ftune.__file__
found["ftune_configs_from"] = ftune.configs.__file__
for key, value in found.items():
    print(f"  {key:<20} {value}")
with open(sys.argv[1], "w") as out:
    json.dump(found, out, indent=2)
EOF
VERSIONS_RC=$?

# ---- 3. the gpu tier -------------------------------------------------------------------------------------
# several pytest workers (pytest-xdist, where it imports) share the GPU: the tiny models leave it idle
# most of the time, and the 8-minute budget is mostly imports, subprocesses and compilation
PARALLEL=()
if [ "$CUDA" = true ] && [ "$TIER_WORKERS" -gt 1 ] && "$PY" -c 'import xdist' 2>/dev/null; then
    PARALLEL=(-n "$TIER_WORKERS" --dist load)
fi
say "pytest -m gpu tests/gpu ${PARALLEL[*]} (at most ${TIER_TIMEOUT}s)"
TIER_STARTED=$(date +%s)
# SIGINT at the limit: pytest stops as after Ctrl-C and still writes the JUnit report of what ran
(cd "$REPO" && timeout -s INT -k 30 "$TIER_TIMEOUT" "$PY" -m pytest -m gpu tests/gpu -p no:cacheprovider -q -rs \
    "${PARALLEL[@]}" --junitxml="$OUTDIR/gpu_tier.xml" -o junit_family=xunit1)
TIER_RC=$?
TIER_SECONDS=$(( $(date +%s) - TIER_STARTED ))
[ $TIER_RC -eq 124 ] && say "the tier ran past ${TIER_TIMEOUT}s and was stopped"

# ---- 4. the bench (GPU only) -----------------------------------------------------------------------------
BENCH_RC=""
if [ "$CUDA" = true ]; then
    say "scripts/bench.py --gpu-synthetic (at most ${BENCH_TIMEOUT}s)"
    # shellcheck disable=SC2086
    (cd "$REPO" && timeout -s INT -k 20 "$BENCH_TIMEOUT" "$PY" scripts/bench.py --gpu-synthetic --json "$OUTDIR/bench.json" \
        --out "$OUTDIR/bench.md" ${GPU_BENCH_ARGS:-})
    BENCH_RC=$?
else
    say "bench skipped: no CUDA"
fi

# ---- 5. the summary --------------------------------------------------------------------------------------
"$PY" - "$OUTDIR" "$CUDA" "$TIER_RC" "$TIER_SECONDS" "${BENCH_RC:-null}" "$VERSIONS_RC" "$STARTED" "$INSTALLED" <<'EOF'
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

out, cuda, tier_rc, tier_s, bench_rc, versions_rc, started, installed = sys.argv[1:9]
out = Path(out)
summary = {"cuda": cuda == "true", "wheels_installed": installed.split(), "versions": None,
           "tier": {"exit_code": int(tier_rc), "seconds": int(tier_s)}, "bench": None, "facts": {}}
if (out / "versions.json").is_file() and versions_rc == "0":
    summary["versions"] = json.loads((out / "versions.json").read_text())
junit = out / "gpu_tier.xml"
try:
    cases = list(ET.parse(junit).getroot().iter("testcase")) if junit.is_file() else None
except ET.ParseError as error:  # a run stopped while writing it
    cases, summary["tier"]["junit_error"] = None, str(error)
if cases is not None:
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    outcome = {}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case]
        state = ("failed" if "failure" in kinds else "errors" if "error" in kinds else
                 "skipped" if "skipped" in kinds else "passed")
        counts[state] += 1
        outcome[name] = state
        if state == "skipped":
            reason = next(child.get("message", "") for child in case if child.tag == "skipped")
            summary["tier"].setdefault("skip_reasons", {}).setdefault(reason, 0)
            summary["tier"]["skip_reasons"][reason] += 1
    summary["tier"].update(counts, collected=sum(counts.values()),
                           not_passed=[n for n, s in outcome.items() if s in ("failed", "errors")])
for line in (out / "gpu_facts.jsonl").read_text().splitlines() if (out / "gpu_facts.jsonl").is_file() else []:
    fact = json.loads(line)
    summary["facts"][fact["name"]] = fact["value"]
if bench_rc != "null":
    summary["bench"] = {"exit_code": int(bench_rc)}
    if (out / "bench.json").is_file():
        report = json.loads((out / "bench.json").read_text())
        for workload in report["workloads"]:
            rows = workload["rows"]
            ours = rows.get("ftune", {})
            summary["bench"][workload["spec"]["workload"]] = {
                "rows": rows, "failed": workload.get("failed", {}), "ftune_over_trainer": {
                    k: {m: round(ours[m] / v[m], 3) for m in ("samples_s", "tokens_s", "mfu", "cuda_mib")
                        if ours.get(m) and v.get(m)} for k, v in rows.items() if k != "ftune"}}
else:
    summary["bench"] = {"skipped": "no CUDA"}
tier_ok = int(tier_rc) == 0 or (not summary["cuda"] and int(tier_rc) == 5)  # 5: nothing ran (all skipped)
bench_ok = bench_rc in ("null", "0")
summary["ok"] = tier_ok and bench_ok and versions_rc == "0"
summary["seconds"] = round(time.time() - int(started))
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
tier = summary["tier"]
bench_line = summary["bench"].get("skipped") or f"exit {summary['bench']['exit_code']}, ftune/Trainer " + json.dumps(
    {name: w["ftune_over_trainer"] for name, w in summary["bench"].items() if isinstance(w, dict)})
print(f"[gpu_check] tier: {tier.get('passed', 0)} passed, {tier.get('failed', 0)} failed, "
      f"{tier.get('errors', 0)} errors, {tier.get('skipped', 0)} skipped ({tier['seconds']} s); "
      f"bench: {bench_line}; ok: {summary['ok']}; {summary['seconds']} s in all -> {out / 'gpu_check.json'}")
sys.exit(0 if summary["ok"] else 1)
EOF
}

main 2>&1 | tee "$OUTDIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
