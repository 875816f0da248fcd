"""Weights & Biases: one W&B run per job, grouped by sweep (`group` = the sweep folder). The config is the
flattened one, metrics are logged against the training step, the summary gets the final metrics, and
config.yaml, results.json and report.html go up as one artifact (best/ too with logger.log_best=true).
The run's files live under <run_dir>/wandb. A resumed job reattaches with the same id (resume="allow").
wandb reads WANDB_PROJECT, WANDB_ENTITY, WANDB_MODE, WANDB_API_KEY, ... itself; logger.wandb.* wins when set.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ftune import registry
from ftune.errors import FtuneError
from ftune.loggers.base import RunInfo, Tracker, env, final_metrics

log = logging.getLogger("ftune")


@registry.logger("wandb")  # its settings: logger.wandb (LoggerConfig)
class WandbLogger(Tracker):
    name = "wandb"

    def __init__(self, info: RunInfo):
        super().__init__(info)
        try:
            import wandb
        except ImportError as error:
            raise FtuneError("logger.backends has wandb, but the wandb package is not installed",
                             where="logger.backends", fix='pip install "ftune[track]" (or wandb)') from error
        settings = info.settings
        mode = settings.get("mode")
        if mode not in (None, "online", "offline", "disabled"):
            raise FtuneError(f"unknown W&B mode `{mode}`", where="logger.wandb.mode",
                             fix="choose from: online, offline, disabled (or null for $WANDB_MODE)")
        saved = info.saved_id(self.name)
        run_id = saved["id"] if saved else None  # None: wandb makes one, saved below
        tags = [info.tags[k] for k in ("task", "model") if info.tags.get(k)]
        tags += [f"peft:{info.tags['peft']}"] if info.tags.get("peft") not in (None, "none") else []
        try:
            self.run = wandb.init(
                project=env("WANDB_PROJECT", settings.get("project"), "ftune"),
                entity=env("WANDB_ENTITY", settings.get("entity")), mode=mode, id=run_id,
                resume="allow" if saved else None, name=info.name, group=info.tags.get("sweep"),
                job_type="train", tags=[*tags, *(settings.get("tags") or [])], config=info.params,
                dir=str(info.run_dir), reinit="create_new",  # never the previous job's run (Hydra multirun)
                settings=wandb.Settings(quiet=True, console="off"))
        except Exception as error:  # no API key online, an unreachable server, ...
            raise FtuneError(f"W&B could not start a run: {str(error).splitlines()[0] if str(error) else error!r}",
                             where="logger.backends", fix="log in (wandb login / WANDB_API_KEY), or set "
                             "WANDB_MODE=offline (sync later with `wandb sync`)") from error
        if saved:  # W&B drops steps below its current one: skip what the run already holds
            self.last_step["train"] = self.last_step["eval"] = int(self.run.starting_step or 0) - 1
        self.run.define_metric("*", step_metric="trainer/step")
        info.save_id(self.name, {"id": self.run.id, "project": self.run.project})
        log.info("wandb: run %s (%s) in project %s", self.run.id, self.run.settings.mode, self.run.project)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "trainer/step": step}, step=step)

    def finish(self, results: dict, files: list[Path]) -> None:
        import wandb

        self.run.summary.update({**final_metrics(results), "best_step": results.get("best_step")})
        artifact = wandb.Artifact(f"run-{self.run.id}", type="ftune-run",
                                  description="config.yaml, results.json and report.html of an ftune run")
        for path in files:
            if path.is_file():
                artifact.add_file(str(path))
        best = self.info.run_dir / "best"
        if self.info.log_best and best.is_dir():
            artifact.add_dir(str(best), name="best")
        self.run.log_artifact(artifact)

    def stop(self, status: str) -> None:
        self.run.finish(exit_code={"FINISHED": 0, "KILLED": 143}.get(status, 1))
