"""Metric gates for CI: `check='f1>=0.85'` or `check='f1>=0.85,loss<=0.6'` (all must hold)."""

from __future__ import annotations

import operator
import re

from ftune.errors import FtuneError

OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_CONDITION = re.compile(r"^\s*([\w./-]+)\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+)\s*$")


def parse(check) -> list[tuple[str, str, float]]:
    """'f1>=0.85,loss<0.5' (or a list of such strings) → [(metric, operator, threshold), ...]."""
    text = check if isinstance(check, str) else ",".join(map(str, check))  # a str, list or ListConfig
    conditions = []
    for part in filter(str.strip, text.split(",")):
        match = _CONDITION.match(part)
        if not match:
            raise FtuneError(f"cannot read the check `{part.strip()}`", where="check",
                             fix="write metric>=number, e.g. check='f1>=0.85'; several: check='f1>=0.85,loss<=0.5'")
        try:
            threshold = float(match.group(3))
        except ValueError as error:
            raise FtuneError(f"`{match.group(3)}` is not a number", where="check") from error
        conditions.append((match.group(1), match.group(2), threshold))
    return conditions


def evaluate(metrics: dict, conditions: list[tuple[str, str, float]]) -> list[dict]:
    """One result per condition: {"check", "metric", "value", "passed"}. An unknown metric is a usage error."""
    results = []
    for metric, op, threshold in conditions:
        value = _lookup(metrics, metric.removeprefix("val/").removeprefix("test/"))
        if not isinstance(value, int | float) or isinstance(value, bool):
            known = sorted(k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))
            raise FtuneError(f"no metric `{metric}` to check", where="check", fix=f"choose from: {', '.join(known)}")
        results.append({"check": f"{metric}{op}{threshold:g}", "metric": metric, "value": value,
                        "passed": bool(OPERATORS[op](value, threshold))})
    return results


def _lookup(metrics: dict, name: str):
    """`f1`, or a dotted path into nested figures: `per_type.LOC.f1`."""
    value = metrics
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def failure_line(results: list[dict]) -> str:
    missed = [r for r in results if not r["passed"]]
    return "check failed: " + "; ".join(f"{r['metric']} = {r['value']:.4f}, required {r['check']}" for r in missed)
