"""MLflow: one MLflow run per job, through MlflowClient (no global active run, so consecutive Hydra jobs in
one process never share a run). Params are the flattened config, metrics keep metrics.jsonl's names and
steps, tags name the task, model, PEFT method and sweep; config.yaml, results.json and report.html are
logged as artifacts at the end (best/ too with logger.log_best=true). A resumed run reattaches to its
MLflow run (id in trackers.json), sets it running again and adds only the params it did not have: MLflow
refuses to change a param, so a value changed on resume is recorded as a `resumed.<key>` tag instead.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from ftune import registry
from ftune.errors import FtuneError
from ftune.loggers.base import RunInfo, Tracker, env, final_metrics

log = logging.getLogger("ftune")
BATCH = 100  # MLflow's log_batch accepts at most 100 params and 1000 metrics per call
_NOT_ALLOWED = re.compile(r"[^\w.\- /:]")  # MLflow's key rule: word characters, . - space / :


def key(name: str) -> str:
    """A param or metric name MLflow accepts (a class label such as `4 (great)` may not be)."""
    return _NOT_ALLOWED.sub("_", name)[:250]


@registry.logger("mlflow")  # its settings: logger.mlflow (LoggerConfig)
class MlflowLogger(Tracker):
    name = "mlflow"

    def __init__(self, info: RunInfo):
        super().__init__(info)
        try:
            from mlflow.entities import Param, RunTag
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise FtuneError("logger.backends has mlflow, but the mlflow package is not installed",
                             where="logger.backends", fix='pip install "ftune[track]" (or mlflow)') from error
        settings = info.settings
        for name in ("mlflow", "alembic"):  # the store's schema migrations log at INFO on first use
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=settings.get("tracking_uri") or None)
        name = env("MLFLOW_EXPERIMENT_NAME", settings.get("experiment"), "ftune")
        try:
            experiment = self.client.get_experiment_by_name(name)
            # a new experiment is marked as model training (MLflow 3's experiment kinds: that or GenAI development)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                name, tags={"mlflow.experimentKind": "custom_model_development"})
        except Exception as error:  # an unreachable server or a bad URI: say so before training starts
            raise FtuneError(f"cannot reach the MLflow store {self.client.tracking_uri}: {error}".splitlines()[0],
                             where="logger.mlflow.tracking_uri", fix="check the URI / MLFLOW_TRACKING_URI, "
                             "or drop mlflow from logger.backends") from error
        params = {key(k): "null" if v is None else str(v) for k, v in info.params.items()}
        saved = info.saved_id(self.name)
        run = self._reattach(saved) if saved else None
        if run is None:
            tags = {**info.tags, "run_dir": str(info.run_dir), "mlflow.runName": settings.get("run_name") or info.name}
            run = self.client.create_run(experiment_id, tags=tags, run_name=settings.get("run_name") or info.name)
            new, changed = params, {}
        else:
            held = run.data.params
            new = {k: v for k, v in params.items() if k not in held}
            changed = {k: v for k, v in params.items() if k in held and held[k] != v[:6000]}
        self.run_id = run.info.run_id
        for i in range(0, len(new), BATCH):
            chunk = list(new.items())[i:i + BATCH]
            self.client.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in chunk])
        if changed:
            self.client.log_batch(self.run_id, tags=[RunTag(f"resumed.{k}", v[:5000]) for k, v in changed.items()])
        info.save_id(self.name, {"run_id": self.run_id, "experiment_id": experiment_id,
                                 "tracking_uri": self.client.tracking_uri})
        log.info("mlflow: run %s in experiment %s at %s", self.run_id, name, self.client.tracking_uri)

    def _reattach(self, saved: dict):
        try:
            run = self.client.get_run(saved["run_id"])
        except Exception:  # deleted, or another store: a new run, said once
            log.warning("mlflow: run %s of this run directory is not in %s; starting a new one", saved["run_id"],
                        self.client.tracking_uri)
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        evals = sorted(k for k in run.data.metrics if k.startswith("val/"))
        for kind, key in (("train", "loss"), ("eval", evals[0] if evals else None)):
            history = self.client.get_metric_history(run.info.run_id, key) if key else []
            self.last_step[kind] = max((m.step for m in history), default=-1)
        log.info("mlflow: resuming run %s after its step %d", run.info.run_id, self.last_step["train"])
        return run

    def metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key(k), v, now, step) for k, v in values.items()])

    def finish(self, results: dict, files: list[Path]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(results.get("steps") or 0)
        final = final_metrics(results)
        if results.get("best_step") is not None:
            final["best_step"] = float(results["best_step"])
        items = [Metric(key(k), v, now, step) for k, v in final.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])
        for path in files:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        best = self.info.run_dir / "best"
        if self.info.log_best and best.is_dir():
            self.client.log_artifacts(self.run_id, str(best), artifact_path="best")

    def stop(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
