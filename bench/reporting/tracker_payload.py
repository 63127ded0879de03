"""What ``--log`` sends a tracker, read from a run folder like every report: per method and
setting its parameters, each metric's mean, 95% interval and n, its cell counts and cost (time,
NFE, peak memory); the run's provenance and resolved config, tags that name the run folder,
and the report (Markdown with its figures folder, so its images show, and HTML) and its first
image grids as files."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from bench.reporting.aggregate import Row, measures_cost, row_name, summarize
from bench.reporting.html_report import write_html
from bench.reporting.report import build_report, provenance, write_markdown

GRIDS_LOGGED = 3  # image grids a tracker gets: the report's first (sample, seed) pairs
COST_KEYS = ("time_s", "gpu_time_s", "nfe", "grad_evals", "peak_mem_mb")


@dataclass
class LoggedRow:
    """One method x setting as a tracker sees it: a name, flat parameters and flat numbers."""

    name: str
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass
class LoggedRun:
    """Everything logged for one run folder: its name, tags, provenance, rows and files."""

    name: str
    run_dir: Path
    tags: dict[str, str]
    params: dict[str, str]
    config: dict
    rows: list[LoggedRow]
    report: Path  # a folder: report.md with its figures in report_files/, and report.html
    grids: list[Path]  # the first image grids, as PNG files


def logged_run(run_dir, folder: Path) -> LoggedRun:
    """What ``log_run`` sends, with the report's files written into ``folder``."""
    report = build_report(run_dir, n_grid=GRIDS_LOGGED)
    run = report.run
    (folder / "report").mkdir()
    write_markdown(report, folder / "report" / "report.md")
    write_html(report, folder / "report" / "report.html")
    grids = []
    for picture in report.grids:
        grids.append(folder / picture.name)
        grids[-1].write_bytes(picture.png)
    prov = dict(provenance(run))
    tags = {
        "editbench.run": run.run_dir.name,
        "editbench.run_dir": str(run.run_dir.resolve()),
        "editbench.fingerprint": run.fingerprint or "unknown",
        "editbench.commit": (run.manifest.get("git") or {}).get("commit") or "unknown",
        "editbench.labels": "; ".join(run.labels) or "none",
    }
    return LoggedRun(run.run_dir.name, run.run_dir, tags, prov, run.manifest.get("config") or {},
                     [_logged_row(r) for r in summarize(run)], folder / "report", grids)  # fmt: skip


def _logged_row(row: Row) -> LoggedRow:
    params = {"method": row.method, **{k: _text(v) for k, v in row.setting.items()}}
    numbers = {"cells": row.cells, "ok": row.ok, "failed": row.failed, "skipped": row.skipped}
    for name, stat in row.metrics.items():
        numbers |= {f"{name}.mean": stat.mean, f"{name}.ci_low": stat.low, f"{name}.ci_high": stat.high,
                    f"{name}.n": stat.n}  # fmt: skip
    if measures_cost(row.method):
        numbers |= {f"cost.{k}": row.cost[k] for k in COST_KEYS}
    finite = {k: float(v) for k, v in numbers.items() if v is not None and math.isfinite(v)}
    return LoggedRow(row_name(row.method, row.label), params, finite)


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
