"""TensorBoard event files under <run_dir>/tensorboard: every metric as a scalar (train/loss, val/f1, ...),
and at the end the job's hyper-parameters with its final metrics, so that `tensorboard --logdir
multirun/<time>` compares a sweep's jobs in the HParams view."""

from __future__ import annotations

from pathlib import Path

from ftune import registry
from ftune.errors import FtuneError
from ftune.loggers.base import RunInfo, Tracker, final_metrics

HPARAM_TYPES = (int, float, str, bool)


@registry.logger("tensorboard")
class TensorBoardLogger(Tracker):
    name = "tensorboard"

    def __init__(self, info: RunInfo):
        super().__init__(info)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise FtuneError("logger.backends has tensorboard, but the tensorboard package is not installed",
                             where="logger.backends", fix='pip install "ftune[track]" (or tensorboard)') from error
        self.folder = info.run_dir / "tensorboard"
        self.writer = SummaryWriter(str(self.folder))

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key if "/" in key else f"train/{key}", value, step)

    def finish(self, results: dict, files: list[Path]) -> None:
        hparams = {k: v if isinstance(v, HPARAM_TYPES) else str(v) for k, v in self.info.params.items()}
        final = {f"final/{k}": v for k, v in final_metrics(results).items() if k.count("/") == 1}
        # run_name ".": the hparams summary sits next to the scalars, so each job is one run in the HParams view
        self.writer.add_hparams(hparams, final, run_name=".", global_step=int(results.get("steps") or 0))

    def stop(self, status: str) -> None:
        self.writer.close()
