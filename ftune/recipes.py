"""Reference recipes: does a finished run land where its recipe usually lands?

A recipe is a `configs/experiment/<name>.yaml` with a `recipe:` section (schema: ftune.config.RecipeConfig)
giving the expected range of metrics per split: mean ± spread over seeds where measured here, the published
range otherwise. A run matches a recipe when it was started with `experiment=<name>`, or when it trains the
recipe's model on the recipe's exact data (same task, same examples: `fingerprints`). A run that lands below
the range gets one warning line naming the usual causes — a wrong tag scheme, truncation, a different label
set, a learning rate off by a factor — and the settings in which it differs from the recipe, since those are
where a few silent points of F1 go.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ftune")
# settings a recipe pins that are worth naming when a run differs (data paths are covered by fingerprints)
SKIP_PREFIXES = ("recipe.", "task.data.", "defaults", "run_dir", "hydra.", "logger.")
CAUSES = ("the tag scheme (task.scheme)", "truncation (task.max_length)", "the label set",
          "the learning rate (optimizer.lr)")



def _yaml(value) -> str:
    """A setting as the user writes it on the command line (None is `null`)."""
    return "null" if value is None else str(value)

def fingerprint(task_name: str, examples: list[dict]) -> str:
    """A short hash of a split's examples as the task read them: files with other names, paths or line
    endings but the same examples match; a slice (max_train) or one changed label does not."""
    digest = hashlib.sha256(task_name.encode())
    for example in examples:
        digest.update(json.dumps({k: v for k, v in example.items() if k != "where"}, sort_keys=True,
                                 default=str).encode())
    return digest.hexdigest()[:16]


def data_fingerprints(cfg: DictConfig) -> dict[str, str]:
    """{split: fingerprint} of a composed config's data, read as `ftune train` reads it (slices included)."""
    from ftune import run as R
    from ftune.registry import build_task

    task = build_task(cfg.task)
    return {name: fingerprint(task.name, examples) for name, examples in R.load_splits(task).items() if examples}


def experiment_files() -> list[Path]:
    folder = resources.files("ftune.configs") / "experiment"
    return sorted(Path(str(folder)).glob("*.yaml")) if folder.is_dir() else []


def _model_choice(experiment: DictConfig) -> str | None:
    """The model name an experiment trains: its `model.name`, or the `override /model: <name>` it selects."""
    if OmegaConf.select(experiment, "model.name"):
        return experiment.model.name
    for entry in experiment.get("defaults", []):
        if isinstance(entry, DictConfig) and "override /model" in entry:
            return entry["override /model"]
    return None


def match(cfg: DictConfig, prints: dict[str, str]) -> tuple[dict, str, DictConfig] | None:
    """(recipe, how it matched, the experiment file's config) for a run whose splits have these
    fingerprints, or None."""
    if cfg.get("recipe") is not None and cfg.recipe.name:
        path = next((p for p in experiment_files() if p.stem == cfg.recipe.name), None)
        experiment = OmegaConf.load(path) if path else OmegaConf.create({})
        return OmegaConf.to_container(cfg.recipe), "experiment", experiment
    for path in experiment_files():
        experiment = OmegaConf.load(path)
        recipe = experiment.get("recipe")
        if (recipe is None or not recipe.get("fingerprints") or _model_choice(experiment) != cfg.model.name
                or any(prints.get(split) != value for split, value in recipe.fingerprints.items())):
            continue
        return OmegaConf.to_container(recipe), "data fingerprint", experiment
    return None


def differences(cfg: DictConfig, experiment: DictConfig, prints: dict[str, str] | None = None) -> dict[str, list[Any]]:
    """{key: [this run's value, the recipe's]} for each setting the experiment pins that the run changed,
    and `data.<split>` for each split whose examples are not the recipe's (experiment= with other data)."""
    pinned = _flatten(OmegaConf.to_container(experiment))
    recorded = OmegaConf.select(experiment, "recipe.fingerprints", default=None) or {}
    found = {f"data.{split}": [prints.get(split), value] for split, value in recorded.items()
             if prints is not None and prints.get(split) != value}
    for key, wanted in pinned.items():
        if key.startswith(SKIP_PREFIXES):
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if value != wanted and not (isinstance(value, int | float) and isinstance(wanted, int | float)
                                    and abs(value - wanted) <= 1e-12 * max(abs(wanted), 1)):
            found[key] = [value, wanted]
    return found


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def validate(recipe: DictConfig | None) -> None:
    """Before training: every expected range is [low, high], so a typo fails now, not after the run."""
    from ftune.errors import FtuneError

    for split, metrics in ((recipe or {}).get("expected") or {}).items():
        if split not in ("validation", "test"):
            raise FtuneError(f"unknown split `{split}`", where=f"recipe.expected.{split}", fix="use validation or test")
        for metric, bounds in metrics.items():
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise FtuneError(f"expected range {list(bounds)} is not [low, high]",
                                 where=f"recipe.expected.{split}.{metric}", fix="give two numbers, low first")


def check(recipe: dict, matched_by: str, results: dict, differs: dict) -> dict:
    """The record for results.json: each expected metric of each evaluated split, inside/below/above."""
    checks = []
    for split, metrics in recipe.get("expected", {}).items():
        for metric, (low, high) in metrics.items():
            if split not in results:
                continue  # e.g. a recipe range for test, and this run had no test split
            value = results[split].get(metric)
            if not isinstance(value, int | float):  # a misspelt metric name must not pass silently
                checks.append({"split": split, "metric": metric, "value": None, "low": low, "high": high,
                               "verdict": "unknown metric"})
                continue
            verdict = "below" if value < low else "above" if value > high else "inside"
            checks.append({"split": split, "metric": metric, "value": value, "low": low, "high": high,
                           "verdict": verdict})
    verdicts = {c["verdict"] for c in checks} - {"unknown metric"}
    overall = "below" if "below" in verdicts else "inside" if verdicts == {"inside"} else (
        "above" if verdicts else "not evaluated")
    return {"name": recipe.get("name"), "matched_by": matched_by, "source": recipe.get("source", ""),
            "verdict": overall, "checks": checks, "differs": differs}


def lines(record: dict, greater_is_better: bool = True) -> tuple[list[str], str | None]:
    """(lines for the final table, the one warning line or None)."""
    shown = [f"recipe {record['name']} (matched by {record['matched_by']}): {c['split']} {c['metric']} "
             + (f"{c['value']:.4g} is {c['verdict']} the expected range {c['low']:g}–{c['high']:g}"
                if c["value"] is not None else "is no metric of this task (check recipe.expected)")
             for c in record["checks"]]
    if not record["checks"]:
        shown = [f"recipe {record['name']}: no split of this run has a metric with an expected range"]
    # a loss-like main metric is bad when high; every shipped recipe's metrics are greater-is-better
    bad = [c for c in record["checks"] if c["verdict"] == ("below" if greater_is_better else "above")]
    if not bad:
        return shown, None
    worst = bad[0]
    differs = ", ".join(f"{k} (not the recipe's examples)" if k.startswith("data.") else f"{k}={_yaml(v[0])} (recipe {_yaml(v[1])})"
                        for k, v in record["differs"].items())
    warning = (f"{worst['split']} {worst['metric']} {worst['value']:.4g} is {worst['verdict']} the range {worst['low']:g}–"
               f"{worst['high']:g} that recipe {record['name']} usually reaches; check {', '.join(CAUSES)}"
               + (f"; this run differs from the recipe in {differs}" if differs else ""))
    return shown, warning


def report(cfg: DictConfig, splits: dict[str, list[dict]], task, results: dict, to_stderr: bool = False) -> dict | None:
    """Match, check, print the verdict under the final tables and warn once; returns the results.json record."""
    import sys

    prints = {name: fingerprint(task.name, examples) for name, examples in splits.items() if examples}
    found = match(cfg, prints)
    if found is None:
        return None
    recipe, matched_by, experiment = found
    record = check(recipe, matched_by, results, differences(cfg, experiment, prints))
    shown, warning = lines(record, task.greater_is_better)
    for line in shown:
        print(line, file=sys.stderr if to_stderr else sys.stdout)
    if warning:
        log.warning(warning)
    return record
