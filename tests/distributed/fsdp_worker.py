"""torchrun target for tests/distributed/test_fsdp.py: several `ftune train` jobs in one launch (the imports are paid
once), each optionally with a fault: a NaN added to one rank's loss at one step, or a SIGKILL of rank 0
once a step is done. The faults are patched in here, so ftune itself carries no test hooks.

    python -m torch.distributed.run --nproc_per_node=2 tests/distributed/fsdp_worker.py jobs.json

jobs.json: [{"args": [...], "exit": 0, "nan_at": [step, rank] | null, "kill_at": step | null}, ...]
"""

import json
import os
import signal
import sys

import torch


def _patch(job: dict) -> None:
    import ftune.engine.events as events
    from ftune.engine.loop import Engine

    rank = int(os.environ.get("RANK", 0))
    original_step = Engine.__dict__.get("_original_train_step") or Engine._train_step
    Engine._original_train_step = original_step
    nan_at = job.get("nan_at")

    def train_step(self, micro_batches, params, window, step):
        if nan_at and step == nan_at[0] and rank == nan_at[1]:
            loss = self.task.loss
            # a NaN in the loss value only (the gradients stay finite): only agreement makes the other rank skip
            self.task.loss = lambda outputs, batch: (lambda s, t: (s + float("nan"), t))(*loss(outputs, batch))
            try:
                return original_step(self, micro_batches, params, window, step)
            finally:
                del self.task.loss
        return original_step(self, micro_batches, params, window, step)

    Engine._train_step = train_step
    original_build = events.__dict__.get("_original_build") or events.build_subscribers
    events._original_build = original_build
    kill_at = job.get("kill_at")

    def build(*args):
        def kill(event):
            if kill_at and event == {"event": "step", "step": kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)

        kill.close = lambda: None
        return [*original_build(*args), kill]

    events.build_subscribers = build


def main() -> None:
    from hydra.core.global_hydra import GlobalHydra

    from ftune import cli

    for job in json.loads(open(sys.argv[1]).read()):
        _patch(job)
        GlobalHydra.instance().clear()
        try:
            cli.main(["train", *job["args"]])
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
        if code != job.get("exit", 0):
            print(f"fsdp_worker: job {job['args'][-1]} exited with {code}", file=sys.stderr, flush=True)
            sys.exit(1)
        torch.distributed.barrier()


if __name__ == "__main__":
    main()
