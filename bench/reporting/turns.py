"""Multi-turn runs: which cells make up each of MagicBrush's settings, and the drift of a metric
over the turns of a chain (``editbench report RUN --table drift``).

A cell of a multi-turn run is one of (``chain``, ``turn`` and ``input_key`` in the store):

- **independent**: it edited its turn's recorded source (``input_key`` empty): every cell of a
  ``turns: independent`` run, turn 1 and the independent turns of an iterative one;
- **iterative**: a chain's turn 1 and its turns edited from the previous output (``input_key`` set).

Turn 1 is both. The drift table gives, per method and setting, a metric's mean and 95% bootstrap
interval at each turn, iterative and independent side by side, so a reader sees how fast each
method drifts from what independent edits of the same turns reach; the plot draws the iterative
means against the turn with their intervals. Metrics against the source are against the turn's
own input (the previous output for an iterative turn: the worker scores what it edited).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.reporting import plots
from bench.reporting.aggregate import RunData, Stat, arrow, chained, describe, independent_cells, load_run, row_name
from bench.reporting.piebench_table import value_text
from bench.settings import setting_label, varying_params

ITERATIVE, INDEPENDENT = "iterative", "independent"


def turn_of(cells: pd.DataFrame) -> pd.Series:
    """Each cell's turn (1 for a sample without turns)."""
    turn = cells["turn"] if "turn" in cells else pd.Series(np.nan, index=cells.index)
    return turn.fillna(1).astype(int)


def iterative_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells of the chains: turn 1 and the turns edited from the previous output."""
    return cells[chained(cells) | (turn_of(cells) == 1)]


def final_turn_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Each chain's cell at its last turn, iterative (MagicBrush's final-turn setting): per method,
    setting and seed, the chained cell of the chain's highest turn, or turn 1 for a one-turn chain.
    Empty when the run has no chained cells but chains longer than one turn (``turns: independent``)."""
    turns = turn_of(cells)
    chain = cells["chain"].fillna(cells["sample_id"]) if "chain" in cells else cells["sample_id"]
    last = turns.groupby(chain).transform("max")
    final = (turns == last) & (chained(cells) | (last == 1))
    return cells[final]


def has_chains(cells: pd.DataFrame) -> bool:
    """Whether some cell edited a previous output (the run was ``turns: iterative``)."""
    return bool(chained(cells).any())


@dataclass
class DriftRow:
    """One method, setting and kind of edit (iterative or independent): a metric's stat per turn."""

    method: str
    label: str
    kind: str
    by_turn: dict[int, Stat]


def drift_rows(run: RunData, metric: str) -> list[DriftRow]:
    """Per method and setting, the metric per turn over the ok cells: the chains (iterative) and,
    where the run has them, the independent edits of the same turns."""
    ok = run.cells[run.cells["status"] == "ok"]
    rows = []
    for method in run.methods:
        texts = run.settings(method)
        varying, _ = varying_params(method, [json.loads(t) for t in texts])
        for text in texts:
            own = ok[(ok["method"] == method) & (ok["setting"] == text)]
            label = setting_label(json.loads(text), varying)
            for kind, cells in ((ITERATIVE, iterative_cells(own)), (INDEPENDENT, independent_cells(own))):
                if kind == ITERATIVE and not has_chains(own):
                    continue
                by_turn = {int(t): _stat(run, part, metric) for t, part in cells.groupby(turn_of(cells), sort=True)}
                if by_turn:
                    rows.append(DriftRow(method, label, kind, by_turn))
    return rows


def _stat(run: RunData, cells: pd.DataFrame, metric: str) -> Stat:
    column = f"metric.{metric}"
    stored = np.array([(key, metric) in run.present for key in cells["key"]], dtype=bool)
    values = cells[column].to_numpy(dtype=np.float64)[stored] if column in cells else np.array([])
    return describe(values, n_missing=int((~stored).sum()))


def drift_markdown(run_dir, metrics: list[str] | None = None, ci: bool = True, digits: int = 4) -> str:
    """One table per metric: rows per method, setting and kind, a column per turn (mean [CI], n)."""
    from bench.reporting.report import md_table, md_text

    run = load_run(run_dir)
    lines = [f"# Drift per turn: {md_text(run.run_dir.name)}", ""]
    if run.labels:
        lines += [f"**{md_text(plots.caveat(run.labels))}**", ""]
    if not has_chains(run.cells):
        lines += ["No chains in this run (it was not `dataset.turns: iterative`): the rows are independent edits.", ""]
    for metric in metrics or run.image_metrics:
        rows = drift_rows(run, metric)
        turns = sorted({t for r in rows for t in r.by_turn})
        header = ["method", "edits"] + [f"turn {t} {arrow(metric)}".strip() for t in turns]
        body = [[row_name(r.method, r.label), r.kind] +
                [_cell(r.by_turn.get(t), ci, digits) for t in turns] for r in rows]  # fmt: skip
        lines += [f"## {md_text(metric)}", ""] + md_table(header, body) + [""]
    return "\n".join(lines) + "\n"


def _cell(stat: Stat | None, ci: bool, digits: int) -> str:
    return "—" if stat is None else f"{value_text(stat, ci, digits)} (n={stat.n})"


def drift_figure(run: RunData, metric: str):
    """The metric's iterative mean against the turn, one line per method and setting, with its
    95% interval as error bars (the independent edits dashed, where the run has them)."""
    fig = plots.new_figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    rows = drift_rows(run, metric)
    colours = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(row_name(r.method, r.label) for r in rows))}
    for r in rows:
        turns = sorted(t for t, s in r.by_turn.items() if not math.isnan(s.mean))
        if not turns:
            continue
        means = np.array([r.by_turn[t].mean for t in turns])
        low = np.array([r.by_turn[t].low for t in turns])
        high = np.array([r.by_turn[t].high for t in turns])
        errors = np.nan_to_num(np.vstack([means - low, high - means]))
        style = "-o" if r.kind == ITERATIVE else "--x"
        name = row_name(r.method, r.label)
        ax.errorbar(turns, means, yerr=errors, fmt=style, color=colours[name], capsize=3, label=f"{name} ({r.kind})")
    ax.set_xlabel("turn")
    ax.set_ylabel(f"{metric} {arrow(metric)}".strip())
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", fontsize=7, ncols=2)
    title = f"{metric} per turn: mean and 95% interval"
    fig.suptitle(f"{title} — {plots.SMOKE_MARK}" if run.labels else title, fontsize=9)
    return fig


def write_drift(run_dir, metrics: list[str] | None = None, md_path=None) -> list[str]:
    """Without ``md_path``, the drift tables as Markdown; with it, the tables and one plot per
    metric (``<name>_files/drift_<metric>.png``) written there."""
    text = drift_markdown(run_dir, metrics)
    if not md_path:
        return [text]
    run = load_run(run_dir)
    md_path = Path(md_path)
    assets = md_path.parent / f"{md_path.stem}_files"
    assets.mkdir(parents=True, exist_ok=True)
    figures = []
    for metric in metrics or run.image_metrics:
        (assets / f"drift_{metric}.png").write_bytes(plots.png(drift_figure(run, metric)))
        figures.append(f"![{metric} per turn]({assets.name}/drift_{metric}.png)")
    md_path.write_text(text + "\n" + "\n\n".join(figures) + "\n", encoding="utf-8")
    return [f"Drift tables and plots -> {md_path}"]

