"""`make gpu-wheels`: the wheels a GPU machine without network lacks, into .whl/ (ignored), within 64 MiB.

    python scripts/gpu_wheels.py [--dest .whl] [--limit-mib 64]

The GPU machines this project borrows (docs/gpu.md) have torch, transformers, accelerate, peft, tokenizers,
onnxruntime, httpx, pyarrow, pandas ... preinstalled, but not hydra-core, omegaconf, seqeval, datasets,
bitsandbytes or fastapi/uvicorn, and pip reaches nothing there. This downloads those (Python 3.12, manylinux
x86-64, the versions requirements.lock pins) with no dependencies, group by group in the order below; a group
that would take the working tree that travels with them (tracked and untracked, not ignored, files + .whl/)
over the limit is left out whole, and its tests skip there. Packages published only as source (antlr4,
seqeval, rouge-score) are built into pure-Python wheels here. Prints the list with sizes and the total, and
writes it to .whl/MANIFEST.json, which scripts/gpu_check.sh reports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (group, why, packages): groups in priority order; each package is one the machines lack (KINDS.md's list)
GROUPS = [
    ("config", "ftune itself: Hydra configs", ["hydra-core", "omegaconf", "antlr4-python3-runtime"]),
    ("metrics", "NER metrics (seqeval); scikit-learn is there", ["seqeval"]),
    ("data", "datasets (the HF Trainer side of scripts/bench.py; the data readers)", ["datasets", "dill", "multiprocess"]),
    # fastapi imports opentelemetry-api at import time; pydantic wants a newer typing-extensions than some images'
    ("serve", "ftune serve: FastAPI + uvicorn (httpx, anyio, h11, click, annotated-doc, zipp are there)",
     ["fastapi", "starlette", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
      "opentelemetry-api", "importlib-metadata", "uvicorn"]),
    ("gen", "rougeL of generative evaluation (absl-py, regex, joblib, tqdm are there)", ["rouge-score", "nltk"]),
    ("quant", "QLoRA (model.quantization=nf4|int8): bitsandbytes' CUDA kernels", ["bitsandbytes"]),
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
MIB = 2**20


def pins() -> dict[str, str]:
    """name → version from requirements.lock (the versions the CPU suite was run with)."""
    found = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[name.strip().lower()] = version.split(";")[0].strip()
    return found


def travelling_mib(dest: Path) -> float:
    """MiB of the files that travel besides the wheels: tracked, and untracked but not ignored."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    total = 0
    for name in filter(None, listed):
        path = REPO / name.decode()
        if path.is_file() and dest not in path.parents:
            total += path.stat().st_size
    return total / MIB


def fetch(requirement: str, into: Path) -> Path:
    """One wheel for CPython 3.12 on manylinux x86-64; built here (pure Python only) when none is published."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                "3.12", "--implementation", "cp", *platforms, "-d", str(into), requirement]
    if subprocess.run(download, capture_output=True, text=True).returncode == 0:
        [wheel] = list(into.glob("*.whl"))  # pip matched it to CPython 3.12 on manylinux x86-64
        return wheel
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into), requirement],
                           capture_output=True, text=True)
    if built.returncode != 0:
        raise SystemExit(f"gpu-wheels: no wheel for {requirement}:\n{built.stderr[-2000:]}")
    [wheel] = list(into.glob("*.whl"))
    if not wheel.name.endswith("-none-any.whl"):  # built here: only pure Python runs on the other machine
        raise SystemExit(f"gpu-wheels: {requirement} has no published wheel and builds to {wheel.name}, not pure Python")
    return wheel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", default=str(REPO / ".whl"))
    p.add_argument("--limit-mib", type=float, default=64.0, help="the most that may travel (device README)")
    p.add_argument("--margin-mib", type=float, default=1.0, help="kept free for files added later")
    args = p.parse_args()
    dest = Path(args.dest).resolve()
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    versions = pins()
    tree = travelling_mib(dest)
    budget = args.limit_mib - args.margin_mib - tree
    print(f"gpu-wheels: the rest of the working tree is {tree:.1f} MiB; {budget:.1f} MiB left for wheels")
    used, manifest, left_out = 0.0, [], []
    with tempfile.TemporaryDirectory(prefix="gpu-wheels-") as tmp:
        for group, why, names in GROUPS:
            wheels = []
            for name in names:
                into = Path(tmp) / group / name
                into.mkdir(parents=True)
                requirement = f"{name}=={versions[name]}" if name in versions else name
                wheels.append((name, fetch(requirement, into)))
            size = sum(w.stat().st_size for _, w in wheels) / MIB
            if used + size > budget:
                left_out.append({"group": group, "why": why, "packages": names, "mib": round(size, 2)})
                print(f"gpu-wheels: left out {group} ({', '.join(names)}): {size:.1f} MiB does not fit")
                continue
            used += size
            for name, wheel in wheels:
                shutil.move(str(wheel), dest / wheel.name)
                manifest.append({"group": group, "package": name, "wheel": wheel.name,
                                 "mib": round(wheel.stat().st_size / MIB if wheel.exists() else
                                              (dest / wheel.name).stat().st_size / MIB, 2)})
    (dest / "MANIFEST.json").write_text(json.dumps({"total_mib": round(used, 2), "tree_mib": round(tree, 2),
                                                    "wheels": manifest, "left_out": left_out}, indent=2) + "\n")
    width = max(len(row["wheel"]) for row in manifest)
    for row in manifest:
        print(f"  {row['wheel']:<{width}}  {row['mib']:6.2f} MiB  ({row['group']})")
    print(f"gpu-wheels: {len(manifest)} wheels, {used:.1f} MiB in {dest}; with the tree {used + tree:.1f} MiB "
          f"of {args.limit_mib:.0f}")
    for group in left_out:
        print(f"gpu-wheels: NOT included: {group['group']} ({', '.join(group['packages'])}, {group['mib']} MiB): "
              f"its tests skip on the GPU machine")


if __name__ == "__main__":
    main()
