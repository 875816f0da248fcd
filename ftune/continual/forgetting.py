"""The forgetting table: each earlier run's main metric on its own validation split when it was trained, now (the
new run's model, or the earlier adapter as stored in the new run), and the difference. Kept in results.json as
`forgetting`, a list of rows; the console, report.html and the model card show these rows."""

from __future__ import annotations

HEADER = ["earlier run", "task", "metric", "when trained", "now", "difference"]


def row(run: str, task: str, metric: str, before: float, now: float, adapter: str | None = None,
        greater_is_better: bool = True) -> dict:
    return {"run": run, "task": task, "metric": metric, "adapter": adapter, "when_trained": before, "now": now,
            "difference": now - before, "greater_is_better": greater_is_better}


def table_rows(rows: list[dict]) -> list[list]:
    """Rows of the shown table (HEADER's columns); an adapter evaluated under its name says so."""
    return [[r["run"] + (f" (adapter {r['adapter']})" if r.get("adapter") else ""), r["task"], r["metric"],
             r["when_trained"], r["now"], r["difference"]] for r in rows]
