"""torchrun target of the gpu tier's FSDP2 test: tests/distributed/fsdp_worker.py (jobs, faults), with FSDP2 applied on a
world of one process too.

ftune does not shard a model that one process trains ("nothing to shard", ftune/engine/sharding.py), and
the GPU machines have one GPU. To run FSDP2's code on CUDA and NCCL all the same (fully_shard units, DTensor
parameters and optimizer state, gathered saves of best/, per-rank optimizer files, resume), this worker
lets `shard` see a world size that is 1 but does not compare equal to 1: the mesh has one rank, and every
other step is ftune's own.

    python -m torch.distributed.run --nproc_per_node=1 tests/gpu/fsdp_one_gpu_worker.py jobs.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


class _OneProcess(int):
    """1, which does not pass `num_processes == 1`: shard() goes on to build a 1-rank mesh."""

    def __eq__(self, other):
        return False if other == 1 else int(self) == other

    __hash__ = int.__hash__


class _Accelerator:
    def __init__(self, accelerator):
        self._accelerator = accelerator

    def __getattr__(self, name):
        value = getattr(self._accelerator, name)
        return _OneProcess(value) if name == "num_processes" and value == 1 else value


def main() -> None:
    import ftune.engine.sharding as sharding
    from tests.distributed import fsdp_worker

    shard = sharding.shard
    sharding.shard = lambda model, trainer_cfg, accelerator: shard(model, trainer_cfg, _Accelerator(accelerator))
    fsdp_worker.main()


if __name__ == "__main__":
    main()
