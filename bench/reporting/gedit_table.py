"""GEdit-Bench's table view of a run: ``editbench report RUN --table gedit``.

GEdit-Bench (Liu et al., "Step1X-Edit", 2025) reports VIEScore's semantic consistency (SC),
perceptual quality (PQ) and overall (O) per task type, separately for English and Chinese
instructions, on the full set and on its "intersection" subset. Here the three columns are
``vie_sc``, ``vie_pq`` and ``vie_o``; a sample's language and subset come from its groups
(``language``: en/cn, ``intersection``: true/false); one table per language and subset, with a
row per method, setting and task type (GEdit-Bench's eleven, in its order) and an ``Average``
row that is, as in GEdit-Bench's ``calculate_statistics.py``, the mean of the task types' means
(not of all cells). The judge (model, revision, template, decoding) heads every table.

Two rules follow GEdit-Bench's scripts, where a sample either has all its scores in their CSV
or is absent: a cell whose SC, PQ or O is NaN is left out of all three means (``drop_together``),
and counted in the notes; the ``Average`` row says over how many of the eleven task types it
is taken (``k/11 task types`` in its n column): GEdit-Bench's script gives NaN when a task type
is missing, editbench shows the mean over those present and says so, never silently.
"""

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.data import GEDIT_TASK_TYPES
from bench.reporting import plots
from bench.reporting.aggregate import Row, RunData, Stat, arrow, load_run, nan_notes, summarize
from bench.reporting.html_report import STYLE, _caveat, _table, esc
from bench.reporting.piebench_table import value_text
from bench.reporting.report import md_table, md_text

METRICS = (("vie_sc", "SC"), ("vie_pq", "PQ"), ("vie_o", "O"))
LANGUAGES = (("en", "English"), ("cn", "Chinese"))
SUBSETS = (("full", "full set"), ("intersection", "intersection subset"))
AVERAGE = "Average"
EXPLANATION = (
    "GEdit-Bench's view: VIEScore SC (semantic consistency), PQ (perceptual quality) and O = sqrt(SC × PQ), "
    "0-10, per task type; one table per instruction language and subset. Average = the mean of the task "
    "types' means, as GEdit-Bench computes it, over the task types it names (k/11; GEdit-Bench's own Average "
    "needs all 11). A cell with SC, PQ or O NaN is left out of all three means, as GEdit-Bench drops a sample "
    "whose scoring failed; NaN cells are counted beside them."
)


@dataclass
class Section:
    """One table: a language and subset, its rows (per method, setting and task type, then Average)
    and how many cells ``drop_together`` left out of every mean."""

    title: str
    subset: str
    rows: list[Row]
    dropped: int = 0
    covered: dict[str, int] = dataclasses.field(default_factory=dict)  # row name -> task types its Average covers

    def n_text(self, row: Row) -> str:
        """The n column: cells, and for an Average row over how many task types it is taken."""
        if row.edit_type != AVERAGE:
            return str(row.ok)
        return f"{row.ok} ({self.covered[row_key(row)]}/{len(GEDIT_TASK_TYPES)} task types)"


@dataclass
class GEditTable:
    run: RunData
    sections: list[Section]
    ci: bool = False

    @property
    def missing_metrics(self) -> list[str]:
        return [m for m, _ in METRICS if m not in self.run.metric_names]


def drop_together(run: RunData, cells: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``cells`` with SC, PQ and O all NaN wherever one of them is NaN, and how many cells that
    touched (cells where each is NaN or not computed are not counted)."""
    present = [m for m, _ in METRICS if m in run.image_metrics]
    stored = {m: pd.Series([(key, m) in run.present for key in cells["key"]], index=cells.index) for m in present}
    failed = pd.Series(False, index=cells.index)
    for m in present:
        failed |= stored[m] & cells[f"metric.{m}"].isna()
    whole = pd.Series(True, index=cells.index)
    for m in present:
        whole &= ~stored[m] | cells[f"metric.{m}"].isna()
    touched = failed & ~whole & (cells["status"] == "ok")
    cells = cells.copy()
    cells.loc[failed, [f"metric.{m}" for m in present]] = math.nan
    return cells, int(touched.sum())


def row_key(row: Row) -> str:
    return f"{row.method} {row.setting_json}"


def _macro_mean(rows: list[Row], metric: str) -> Stat:
    """The mean of the rows' means of ``metric`` (rows without a finite mean left out); the counts summed."""
    stats = [r.metrics[metric] for r in rows if metric in r.metrics]
    means = [s.mean for s in stats if not math.isnan(s.mean)]
    return Stat(sum(means) / len(means) if means else math.nan, n=sum(s.n for s in stats),
                n_nan=sum(s.n_nan for s in stats), n_missing=sum(s.n_missing for s in stats))  # fmt: skip


def _average(rows: list[Row]) -> Row:
    """GEdit-Bench's Average row of one method and setting over its task-type rows."""
    return dataclasses.replace(
        rows[0], edit_type=AVERAGE, cells=sum(r.cells for r in rows), ok=sum(r.ok for r in rows),
        failed=sum(r.failed for r in rows), skipped=sum(r.skipped for r in rows),
        metrics={m: _macro_mean(rows, m) for m, _ in METRICS}, values={},
    )  # fmt: skip


def _has_mean(row: Row) -> bool:
    """Whether a task-type row has a finite mean of every metric the run computed."""
    stats = [row.metrics[m] for m, _ in METRICS if m in row.metrics]
    return bool(stats) and all(not math.isnan(s.mean) for s in stats)


def _section_rows(run: RunData, cells: pd.DataFrame) -> tuple[list[Row], int, dict[str, int]]:
    order = {name: i for i, name in enumerate(GEDIT_TASK_TYPES)}
    cells, dropped = drop_together(run, cells)
    rows = summarize(dataclasses.replace(run, cells=cells), by_edit_type=True)
    out, covered = [], {}
    for method in dict.fromkeys(r.method for r in rows):
        for setting in dict.fromkeys(r.setting_json for r in rows if r.method == method):
            own = sorted((r for r in rows if r.method == method and r.setting_json == setting),
                         key=lambda r: order.get(r.edit_type, len(order)))  # fmt: skip
            out += own + [_average(own)]
            covered[row_key(own[0])] = sum(r.edit_type in GEDIT_TASK_TYPES and _has_mean(r) for r in own)
    return out, dropped, covered


def build_gedit(run_dir, ci: bool = False) -> GEditTable:
    """The GEdit-Bench view of a run folder."""
    run = load_run(run_dir)
    language = run.groups("language")
    intersection = run.groups("intersection") == "true"
    sections = []
    languages = list(LANGUAGES) + ([(None, "no language given")] if language.isna().any() else [])
    for code, name in languages:
        in_language = language.isna() if code is None else language == code
        for subset, subset_name in SUBSETS:
            chosen = in_language & (intersection if subset == "intersection" else True)
            if chosen.any():
                sections.append(Section(f"{name}, {subset_name}", subset, *_section_rows(run, run.cells[chosen])))
    return GEditTable(run, sections, ci)


def header() -> list[str]:
    return ["method", "setting", "task type", "n"] + [f"{title} {arrow(m)}".strip() for m, title in METRICS]


def body(section: Section, ci: bool) -> list[list[str]]:
    return [[r.method, r.label, r.edit_type, section.n_text(r)] + [value_text(r.metrics.get(m), ci) for m, _ in METRICS]
            for r in section.rows]  # fmt: skip


def notes(view: GEditTable) -> list[str]:
    out = []
    if view.missing_metrics:
        missing = ",".join(view.missing_metrics)
        out.append(f"Not computed in this run: {missing} (add them from the saved images: "
                   f"editbench score {view.run.run_dir} --metrics {missing}).")  # fmt: skip
    dropped = sum(s.dropped for s in view.sections if s.subset == "full")
    if dropped:
        out.append(f"{dropped} cell(s) with one of SC, PQ and O NaN are left out of all three means "
                   "(GEdit-Bench keeps or drops a sample's scores together).")  # fmt: skip
    if any(k < len(GEDIT_TASK_TYPES) for s in view.sections for k in s.covered.values()):
        out.append(f"An Average over fewer than {len(GEDIT_TASK_TYPES)} task types is not GEdit-Bench's Average "
                   "(its script gives NaN when a task type is missing); the n column says how many it covers.")
    shown = [dataclasses.replace(r, metrics={m: s for m, s in r.metrics.items() if m in dict(METRICS)})
             for s in view.sections if s.subset == "full" for r in s.rows if r.edit_type != AVERAGE]  # fmt: skip
    return out + nan_notes(shown)


def _heads(run: RunData) -> tuple[list[str], str]:
    """The caveat (smoke numbers) and the judge line every table carries."""
    caveat = [plots.caveat(run.labels)] if run.labels else []
    return caveat, f"Judge: {run.judge_line}" if run.judge_line else "Judge: not recorded (no judge metric computed)"


def gedit_markdown(view: GEditTable) -> str:
    run = view.run
    caveat, judge = _heads(run)
    heads = [f"**{md_text(c)}**" for c in caveat] + ["", md_text(judge), ""]
    lines = [f"# GEdit-Bench table: {md_text(run.run_dir.name)}", "", md_text(EXPLANATION), ""]
    for section in view.sections:
        lines += [f"## {md_text(section.title)}", ""] + heads + md_table(header(), body(section, view.ci)) + [""]
    remarks = notes(view)
    if remarks:
        lines += ["Notes:", ""] + [f"- {md_text(n)}" for n in remarks]
    return "\n".join(lines) + "\n"


def gedit_html(view: GEditTable) -> str:
    run = view.run
    title = f"GEdit-Bench table: {esc(run.run_dir.name)}"
    _, judge = _heads(run)
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
             f"<style>{STYLE}</style></head><body><h1>{title}</h1>", f"<p>{esc(EXPLANATION)}</p>"]  # fmt: skip
    for section in view.sections:
        parts += [f"<h2>{esc(section.title)}</h2>", _caveat(run.labels), f"<p>{esc(judge)}</p>",
                  _table(header(), body(section, view.ci), 3, [r.is_reference for r in section.rows])]  # fmt: skip
    remarks = notes(view)
    if remarks:
        parts += ["<p>Notes:</p>", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in remarks) + "</ul>"]
    return "\n".join(p for p in parts if p) + "\n</body></html>\n"


def write_gedit(run_dir, ci: bool = False, html_path=None, md_path=None) -> list[str]:
    """Write the view to ``html_path`` and/or ``md_path``; without either, return its Markdown."""
    view = build_gedit(run_dir, ci)
    if not (html_path or md_path):
        return [gedit_markdown(view)]
    written = []
    for path, render in ((html_path, gedit_html), (md_path, gedit_markdown)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(render(view), encoding="utf-8")
            written.append(f"GEdit-Bench table -> {path}")
    return written
