"""Summary of a multirun sweep (grid, Optuna, any launcher): a table plus summary.csv and summary.json.

A Hydra Callback. `on_job_end` runs where the job ran (this process, a joblib worker, a Slurm node), so
each job leaves a small record in `<sweep dir>/.jobs/`; `on_multirun_end` runs once, in the process that
swept, and builds the summary from those records. Nothing is kept in memory between the two.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from ftune.errors import EXIT_USAGE, FtuneError, report
from ftune.run_dir import RunDir

log = logging.getLogger("ftune")
RECORDS = ".jobs"
# jobs of the last sweep of this process that failed: `ftune train -m` exits 2 when there are any
failed: list[int] = []


def is_main_rank() -> bool:
    """Under torchrun every rank runs the sweep; only rank 0 writes records and the summary."""
    return os.environ.get("RANK", "0") == "0"


class SweepSummary(Callback):
    def on_multirun_start(self, config, **kwargs: Any) -> None:
        failed.clear()

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if not is_main_rank() or config.hydra.mode != RunMode.MULTIRUN:
            return  # on_job_end also runs for a single `ftune train`: nothing to summarise
        hydra = config.hydra
        output_dir = Path(hydra.runtime.output_dir)
        record = {"job": hydra.job.num, "overrides": list(job_return.overrides or []),
                  "run_dir": str(output_dir), "status": "ok", "metric": None, "value": None,
                  "greater_is_better": True, "error": None}
        value = job_return._return_value  # the property raises for a failed job; the record says why instead
        if job_return.status == JobStatus.FAILED or (isinstance(value, dict) and "error" in value):
            record.update(status="failed", error=str(value["error"] if isinstance(value, dict) else value))
        results = RunDir(output_dir).results()
        if record["status"] == "ok" and results:
            record.update(metric=results.get("main_metric"), value=results.get("validation", {}).get(
                results.get("main_metric")), greater_is_better=results.get("greater_is_better", True))
        folder = Path(hydra.sweep.dir) / RECORDS
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{hydra.job.num}.json").write_text(json.dumps(record, indent=2) + "\n")

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        several = _wait_for_other_ranks()
        if not is_main_rank() or not (sweep_dir / RECORDS).is_dir():
            return
        records = sorted((json.loads(p.read_text()) for p in (sweep_dir / RECORDS).glob("*.json")),
                         key=lambda r: r["job"])
        summary = summarize(records)
        optuna_file = sweep_dir / "optimization_results.yaml"
        if optuna_file.is_file():  # written by the Optuna sweeper just before this callback
            from omegaconf import OmegaConf

            if several and summary["best_job"] is not None:
                # every rank's sweeper wrote this file, each with the trials it drew; the trials that ran
                # were rank 0's (ftune.distributed.share_from_main): the file is rewritten from them
                best = summary["jobs"][[j["job"] for j in summary["jobs"]].index(summary["best_job"])]
                OmegaConf.save(OmegaConf.create({"name": "optuna", "best_value": best["value"], "best_params": {
                    k: _typed(v) for k, v in best["params"].items()}}), optuna_file)
            summary["optuna"] = OmegaConf.to_container(OmegaConf.load(optuna_file))
        (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        (sweep_dir / "summary.csv").write_text(to_csv(summary))
        failed.extend(r["job"] for r in summary["jobs"] if r["status"] != "ok")
        print_summary(summary, sweep_dir)
        if (config.get("logger") or {}).get("report", True):
            _write_report(sweep_dir)


def _write_report(sweep_dir: Path) -> None:
    """report.html of the sweep (ftune.report); a plotting problem never fails a finished sweep."""
    try:
        from ftune.report import write_sweep_report

        print(f"report: {write_sweep_report(sweep_dir)}", file=sys.stderr)
    except Exception as error:  # the summary files are written; the report can be redrawn with `ftune report`
        log.warning("sweep report not written: %s (redraw: ftune report sweep_dir=%s)", error, sweep_dir)


def summarize(records: list[dict]) -> dict:
    """Rows with only the overrides that differ between jobs (the swept ones), and the best job marked."""
    parsed = [dict(o.split("=", 1) if "=" in o else (o, "") for o in r["overrides"]) for r in records]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    swept = [k for k in keys if len({p.get(k) for p in parsed}) > 1] or keys
    scored = [r for r in records if r["status"] == "ok" and isinstance(r["value"], int | float)]
    best = None
    if scored:
        sign = 1 if scored[0]["greater_is_better"] else -1
        best = max(scored, key=lambda r: (sign * r["value"], -r["job"]))["job"]
    jobs = [{**r, "params": {k: p.get(k) for k in swept}, "best": r["job"] == best}
            for r, p in zip(records, parsed, strict=True)]
    summary = {"metric": next((r["metric"] for r in scored), None), "swept": swept, "best_job": best,
               "failed": sum(r["status"] != "ok" for r in records), "jobs": jobs}
    summary["settings"] = across_seeds(summary)
    return summary


def to_csv(summary: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", *summary["swept"], summary["metric"] or "metric", "status", "best", "run_dir", "error"])
    for job in summary["jobs"]:
        writer.writerow([job["job"], *job["params"].values(), "" if job["value"] is None else job["value"],
                         job["status"], "*" if job["best"] else "", job["run_dir"], job["error"] or ""])
    return out.getvalue()


def print_summary(summary: dict, sweep_dir: Path) -> None:
    """The table on stdout; plain text when stdout is not a terminal or NO_COLOR is set (rich decides)."""
    from rich.console import Console
    from rich.table import Table

    metric = summary["metric"] or "metric"
    table = Table(title=f"sweep {sweep_dir} (val/{metric}, * = best)", title_justify="left")
    for column in ("job", *summary["swept"], f"val/{metric}", "status"):
        table.add_column(column, justify="right" if column in ("job", f"val/{metric}") else "left")
    for job in summary["jobs"]:
        value = "" if job["value"] is None else f"{job['value']:.4f}" + (" *" if job["best"] else "")
        status = job["status"] if job["status"] == "ok" else f"failed: {job['error']}"[:60]
        table.add_row(str(job["job"]), *(_short(v) for v in job["params"].values()), value, status)
    Console(file=sys.stdout, width=120).print(table)
    if summary.get("settings"):
        Console(file=sys.stdout, width=120).print(settings_table(summary))
    print(f"summary: {sweep_dir / 'summary.csv'} and summary.json", file=sys.stderr)


def _short(value: Any) -> str:
    """Optuna's floats (0.00015930522616241006) shortened for the table; the files keep every digit."""
    try:
        return f"{float(value):.4g}" if len(str(value)) > 8 and "." in str(value) else str(value)
    except (TypeError, ValueError):
        return str(value)


def _typed(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return value


def _wait_for_other_ranks() -> bool:
    """Under torchrun: every rank's sweep is over (and its files written) before rank 0 summarises."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    dist.barrier()
    return True


# ---- seeds: one row per setting, mean ± std over its seeds (`trainer.seed=1,2,3` in the sweep) ----
SEED_KEY = "trainer.seed"


def across_seeds(summary: dict) -> list[dict]:
    """Per setting (the swept values other than the seed): mean, sample std, min and max of the metric over
    the seeds that finished. One seed per setting cannot tell two recipes apart; the spread says whether a
    difference of means is more than noise. Empty unless the seed was swept."""
    if SEED_KEY not in summary["swept"]:
        return []
    groups: dict[tuple, dict] = {}
    for job in summary["jobs"]:
        setting = {k: v for k, v in job["params"].items() if k != SEED_KEY}
        group = groups.setdefault(tuple(setting.items()), {"params": setting, "seeds": [], "values": [], "failed": 0})
        if job["status"] == "ok" and isinstance(job["value"], int | float):
            group["seeds"].append(job["params"][SEED_KEY])
            group["values"].append(job["value"])
        else:
            group["failed"] += 1
    rows = []
    for group in groups.values():
        values = group.pop("values")
        rows.append({**group, "n": len(values), "mean": statistics.fmean(values) if values else None,
                     "std": statistics.stdev(values) if len(values) > 1 else None,
                     "min": min(values, default=None), "max": max(values, default=None), "best": False})
    scored = [r for r in rows if r["mean"] is not None]
    if scored:
        sign = 1 if next(j["greater_is_better"] for j in summary["jobs"] if j["status"] == "ok") else -1
        max(scored, key=lambda r: sign * r["mean"])["best"] = True
    return rows


def settings_table(summary: dict):
    from rich.table import Table

    metric = summary["metric"] or "metric"
    keys = [k for k in summary["swept"] if k != SEED_KEY]
    table = Table(title=f"mean ± std over seeds (val/{metric}, * = best mean)", title_justify="left")
    for column in (*keys, "seeds", "mean ± std", "min – max"):
        table.add_column(column, justify="left" if column in keys else "right")
    for row in summary["settings"]:
        if row["mean"] is None:
            spread, cells = "", "all failed"
        else:
            spread = f"{row['mean']:.4f} ± {row['std']:.4f}" if row["std"] is not None else f"{row['mean']:.4f}"
            spread += " *" if row["best"] else ""
            cells = f"{row['min']:.4f} – {row['max']:.4f}"
        seeds = str(row["n"]) + (f" ({row['failed']} failed)" if row["failed"] else "")
        table.add_row(*(_short(row["params"][k]) for k in keys), seeds, spread, cells)
    return table


# ---- one job of a sweep: a failure is a failed trial, never the end of the sweep (ftune.cli.run_command) ----
def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_failed(error: Exception) -> dict:
    """The return value of a multirun job that raised: {"error": ...}, which the summary reports and the
    Optuna sweeper counts as a failed trial; the other jobs go on."""
    from hydra.core.hydra_config import HydraConfig

    if isinstance(error, FtuneError):  # the user's to fix: one line, as for a single run
        report(error)
        return {"error": error.one_line()}
    job = HydraConfig.get().job.num  # a bug: the job's log holds the traceback
    log.error("job %s failed", job, exc_info=error)
    print(f"ftune: error: job {job}: {type(error).__name__}: {error}", file=sys.stderr)
    return {"error": f"{type(error).__name__}: {error}"}


def job_result(result: dict) -> Any:
    """What a job hands back to Hydra: under Optuna the objective (the main validation metric), else `result`."""
    from hydra.core.hydra_config import HydraConfig

    if in_multirun() and "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")):
        return result.get("optimized_metric")
    return result


def exit_if_jobs_failed() -> None:
    """After `ftune <command> -m`: jobs that failed were reported one line each and in the summary; the exit
    code says so too."""
    if failed:
        print(f"ftune: {len(failed)} job(s) failed: {', '.join(f'#{n}' for n in failed)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
