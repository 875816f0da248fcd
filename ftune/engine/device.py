"""The device and precision of a run: an accelerate Accelerator for trainer.device and trainer.precision."""

from __future__ import annotations

import os

import torch

from ftune.errors import FtuneError


def make_accelerator(precision: str, device: str):
    """An Accelerator for the precision (auto: bf16, or fp16 on CUDA without bf16; on a CPU bf16 only
    with native bf16, else fp32) and device."""
    from accelerate import Accelerator

    if device == "cuda" and not torch.cuda.is_available():
        raise FtuneError("trainer.device=cuda but no CUDA GPU is visible", where="trainer.device",
                         fix="use trainer.device=auto or cpu")
    on_gpu = torch.cuda.is_available() and device != "cpu"
    if precision == "auto":
        if on_gpu:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:  # bf16 autocast is ~1.8x faster on CPUs with native bf16 and matched fp32's F1 (docs/benchmarks.md)
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not on_gpu:
        raise FtuneError("fp16 needs a CUDA GPU", where="trainer.precision", fix="use fp32 or bf16 on a CPU")
    if precision not in ("fp32", "bf16", "fp16"):
        raise FtuneError(f"unknown precision `{precision}`", where="trainer.precision",
                         fix="choose from: auto, fp32, bf16, fp16")
    if not on_gpu and "LOCAL_WORLD_SIZE" in os.environ:
        # torchrun gives every process OMP_NUM_THREADS=1; on a CPU the processes should share the cores
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // int(os.environ["LOCAL_WORLD_SIZE"])))
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    from accelerate.state import AcceleratorState

    # accelerate keeps one precision per process; jobs run one after another in a process (Hydra multirun,
    # train then eval in a notebook) may each ask for another. The process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=mixed, cpu=not on_gpu)
    if accelerator.distributed_type.name == "FSDP":
        # ftune shards the model itself (ftune/engine/strategy.py); accelerate's FSDP would wrap it again
        raise FtuneError("accelerate's FSDP is not used by ftune", where="accelerate launch --use_fsdp",
                         fix="launch without --use_fsdp and add trainer.strategy=fsdp (docs/distributed.md)")
    return accelerator, precision


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products in hardware (torch exposes the checks privately)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(check() for check in checks if check is not None)
    except Exception:  # a torch without the checks, or a platform where they fail: stay with fp32
        return False
