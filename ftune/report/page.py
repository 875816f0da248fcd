"""report.html of a run: one self-contained page, the PNGs embedded as data: URIs, no external resource of
any kind; the table and page helpers are shared with the sweep report."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from ftune.report.plots import run_plots
from ftune.report.read import read_run
from ftune.run_dir import RunDir

PNG_FOLDER = "report"


STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#555}
img{border:1px solid #eee;max-width:100%}.muted{color:#777;font-size:12px}tr.best td{background:#fff6d5}"""


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return html.escape("" if value is None else str(value))


def table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(f'<tr class="{(classes or [""] * len(rows))[i]}">' + "".join(f"<td>{_cell(v)}</td>" for v in row)
                   + "</tr>" for i, row in enumerate(rows))
    return f"<table>{f'<tr>{head}</tr>' if any(header) else ''}{body}</table>"


def page(title: str, sections: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n")


def _figures(plots: list[tuple[str, Path]]) -> str:
    return '<div class="grid">' + "".join(f"<figure>{_image(p)}<figcaption>{html.escape(t)}</figcaption></figure>"
                                          for t, p in plots) + "</div>"


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _median(values: list) -> float | None:
    numbers = sorted(v for v in values if isinstance(v, int | float))
    return numbers[len(numbers) // 2] if numbers else None


def run_sections(run: dict, plots: list[tuple[str, Path]], explained: list[dict] | None = None) -> list[str]:
    results, config = run["results"], run["config"]
    train = results.get("train") or {}
    overview = [["task", results.get("task") or (config.get("task") or {}).get("name")],
                ["model", (config.get("model") or {}).get("name_or_path")],
                ["peft / freeze", f"{results.get('peft', '')} / {results.get('freeze', '')}"],
                [f"best step (val/{run['main']})", results.get("best_step")], ["steps", results.get("steps")],
                ["precision", results.get("precision")],
                ["train samples/s (this process)", train.get("samples_per_s")],
                ["train samples/s (median of the log)", _median([r.get("samples_per_s") for r in run["train"]])],
                ["train seconds", train.get("seconds")], ["run directory", results.get("run_dir")]]
    if not results:
        overview.append(["status", "no results.json: the run did not finish (curves so far)"])
    sections = ["<h2>Run</h2>" + table(["", ""], overview), "<h2>Curves</h2>" + _figures(plots)]
    splits = [s for s in ("validation", "test") if isinstance(results.get(s), dict)]
    if splits:
        keys = list(dict.fromkeys(k for s in splits for k in _scalars(results[s])))
        sections.append("<h2>Results of best/</h2>" + table(["metric", *splits],
                                                              [[k, *(results[s].get(k) for s in splits)] for k in keys]))
        for key in ("per_type", "per_class"):
            for split in splits:
                rows = results[split].get(key)
                if isinstance(rows, dict) and rows:
                    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
                    sections.append(f"<h2>{split}: {key.replace('_', ' ')}</h2>" +
                                    table(["", *columns], [[n, *(r.get(c) for c in columns)] for n, r in rows.items()]))
    if results.get("forgetting"):  # continual.previous: each earlier run's metric when trained and now
        from ftune.continual.forgetting import HEADER, table_rows

        sections.append("<h2>Forgetting (earlier runs, validation)</h2>" + table(HEADER, table_rows(results["forgetting"])))
    for split, stress in (run.get("stress") or {}).items():  # `ftune stress` (stress_<split>.json)
        main = stress.get("metric", "metric")
        sections.append(f"<h2>Robustness ({split}, {stress.get('examples')} examples)</h2>" + table(
            ["perturbation", main, "± std", "change", "flipped", "changed"],
            [["clean", stress.get("clean"), "", "", "", ""]] +
            [[r["perturbation"], r[main], r["std"], r["delta"], r["flipped"], r["changed"]]
             for r in stress.get("perturbations", [])]))
        if stress.get("attack"):  # stress.attack=input_reduction
            from ftune.explain.reduction import summary

            sections.append(f"<p>{html.escape(summary(stress['attack']))}</p>")
    if explained:  # `ftune report ... explain=N`: explained validation examples, the most confident errors first
        from ftune.explain.page import UNITS_STYLE, rows_table

        method = next((e["method"] for r in explained for e in r.get("explanations", [])), "")
        sections.append(f"<h2>Explained validation examples ({html.escape(method)})</h2><style>{UNITS_STYLE}"
                        ".x td{text-align:left;vertical-align:top}</style><p class=muted>the most confident errors "
                        "first; green supports the label, red speaks against it</p>"
                        f"<div class=x>{rows_table(explained)}</div>")
    if config:
        from ftune.loggers.base import flatten

        flat = flatten(config, 200)
        sections.append("<h2>Configuration</h2><details><summary class=\"muted\">config.yaml, flattened "
                        f"({len(flat)} keys)</summary>" + table(["key", "value"], [[k, v] for k, v in flat.items()])
                        + "</details>")
    return sections


def write_run_report(run_dir: Path | RunDir, out: Path | None = None, explained: list[dict] | None = None) -> Path:
    """report.html (and the PNGs in report/) of a run directory, with `explained` rows (`ftune explain`'s) when
    given; returns the HTML file."""
    run_dir = RunDir.of(run_dir)
    run = read_run(run_dir)
    plots = run_plots(run, run_dir.file(PNG_FOLDER))
    results = run["results"]
    title = f"ftune run: {results.get('task', '?')} / {results.get('model', '?')} ({run_dir.path.name})"
    return _write(out or run_dir.file("report.html"), page(title, run_sections(run, plots, explained)))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
