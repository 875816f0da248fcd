"""Pictures of a run and of a sweep: PNGs drawn with matplotlib's Agg backend (no display, no pyplot state)
and one self-contained HTML page, images embedded as data: URIs, no external resource of any kind.

Everything is read back from the run directory (metrics.jsonl, results.json, config.yaml), so
`ftune report run_dir=...` can redraw any run, finished, stopped or killed, and a sweep's report reads
each job's folder through the sweep's summary.json.

read.py reads a run (through RunDir), plots.py draws its PNGs, page.py writes its report.html, sweep.py a
sweep's.
"""

from __future__ import annotations

from ftune.report.page import PNG_FOLDER, page, run_sections, table, write_run_report
from ftune.report.plots import CURVES, DPI, SIZE, run_plots
from ftune.report.read import read_run, smooth
from ftune.report.sweep import write_sweep_report

__all__ = ["CURVES", "DPI", "PNG_FOLDER", "SIZE", "page", "read_run", "run_plots", "run_sections", "smooth", "table",
           "write_run_report", "write_sweep_report"]
