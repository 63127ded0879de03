"""Turning a run into reports: the per-cell export, the Markdown tables, and the ``Report``
that both the Markdown and the HTML page (``bench.reporting.html_report``) are written from.

Tables give every metric as mean [95% bootstrap CI] over the ok cells, with n, failures,
skips and NaN counts; the reference method (``reconstruct``) comes first and is never
marked best. What is untrained behind the numbers (``RunData.caveats``: the backbone, an
extractor, a judge) is said once per page, each table carries a short reminder, and a metric
column an untrained extractor or judge made carries ``UNTRAINED_MARK``.
"""

import html
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from bench.errors import ConfigError
from bench.metrics import METRICS
from bench.metrics.judge_failures import FAILURE_CLASSES, OK
from bench.paths import output_file
from bench.reporting import plots
from bench.reporting.aggregate import (
    BEST_RULE,
    GROUP_PREFIX,
    N_NOTE,
    NOT_MEASURED,
    REFERENCE_METHOD,
    UNTRAINED_MARK,
    Row,
    RunData,
    arrow,
    best_rows,
    chained_note,
    fixed_params,
    failure_rate_warnings,
    format_stat,
    has_preparation,
    independent_cells,
    is_judge,
    judged_count,
    incomplete_note,
    load_run,
    measures_cost,
    nan_notes,
    nan_reason,
    rank_settings,
    row_name,
    summarize,
)
from bench.settings import setting_label, varying_params
from bench.store import error_counts

#: Distinct errors a report lists (the export has every cell's).
MAX_ERRORS_SHOWN = 20
CELL_COLUMNS = ["method", "backbone", "sample_id", "seed", "edit_type", "status", "error", "output_path"]
#: A multi-turn sample's chain and turn, and the cell whose output a chained turn edited (empty otherwise).
TURN_COLUMNS = ["chain", "turn", "input_key"]
SCHEDULE_COLUMNS = ["start_step", "steps_run"]  # the effective schedule: settings that coincide show it
COST_COLUMNS = ["time_s", "nfe", "gpu_time_s", "peak_mem_mb", "grad_evals", "prep_time_s", "prep_nfe",
                "prep_grad_evals", "prep_cached", "batch_size", "batch_id"]  # fmt: skip
COST_HEADER = ["s/image (mean)", "s/image median [IQR]", "GPU s/image", "NFE/image", "grad evals/image", "peak GPU MB",
               "preparations computed", "prep s each", "prep NFE each", "prep grad evals each",
               "prep reused/cached"]  # fmt: skip
COST_NOTE = ("Time per ok cell: mean, and median [interquartile range]. Preparation (inversion) cost is per "
             "preparation this run computed; the cells that reused one, in this run or from the disk cache, are "
             "counted in reused/cached.")  # fmt: skip


def cells_table(run_dir: Path) -> pd.DataFrame:
    """One row per cell: identity (with the ``backbone`` label it ran on), its turn (``chain``,
    ``turn``, ``input_key``: the cell it edited),
    ``group.<key>`` (the sample's subsets), status, ``param.<name>``,
    ``metric.<name>``, ``nan_reason.<name>`` (why an ok cell's value is NaN: the specific reason its
    note gives, else the metric's declared one), ``failure.<name>`` (a judge metric's answer class:
    ok, unreadable, refused, ...), ``note.<name>`` (what a value came from: a judge's raw answers
    and reasons), cost, labels."""
    run = load_run(run_dir)
    cells = run.cells
    params = pd.DataFrame([json.loads(s) for s in cells["setting"]], index=cells.index).add_prefix("param.")
    groups = cells[[c for c in cells.columns if c.startswith(GROUP_PREFIX)]]
    metric_cols = [f"metric.{m}" for m in run.image_metrics]
    note_cols = [f"note.{m}" for m in run.image_metrics if f"note.{m}" in cells.columns]
    reasons, classes = _nan_reasons(cells, run.image_metrics)
    table = pd.concat(
        [cells[CELL_COLUMNS], cells[TURN_COLUMNS], groups, params, cells[SCHEDULE_COLUMNS], cells[metric_cols], reasons,
         classes, cells[note_cols], cells[COST_COLUMNS]], axis=1,
    )  # fmt: skip
    table["labels"] = "; ".join(run.labels)
    if run.judge_line:
        table["judge"] = run.judge_line
    return table


def _nan_reasons(cells: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``nan_reason.<metric>`` where an ok cell's value is NaN (the note's specific reason, else the
    metric's declared one; empty elsewhere), and ``failure.<metric>``, a judge metric's answer class."""
    ok = cells["status"] == "ok"
    reasons, classes = {}, {}
    for m in metrics:
        declared = nan_reason(m) or "no reason declared by the metric"
        nan = ok & cells[f"metric.{m}"].isna()
        notes = cells[f"note.{m}"] if f"note.{m}" in cells.columns else pd.Series(None, index=cells.index)
        failures = [METRICS[m].failure(note) if is_judge(m) and isinstance(note, str) else None for note in notes]
        reasons[f"nan_reason.{m}"] = [(f.reason if f else declared) if is_nan else "" for f, is_nan in zip(failures, nan)]
        if is_judge(m):
            classes[f"failure.{m}"] = [(f.kind if f else "") if is_nan else OK if isinstance(note, str) else ""
                                       for f, is_nan, note in zip(failures, nan, notes)]  # fmt: skip
    return pd.DataFrame(reasons, index=cells.index), pd.DataFrame(classes, index=cells.index)


# -- the report object ------------------------------------------------------------------------------
@dataclass
class Picture:
    """A figure of the report: a file name, a caption (plain text) and the PNG bytes."""

    name: str
    caption: str
    png: bytes


@dataclass
class GridPicture(Picture):
    """An image grid, with the sample's prompts for its caption (dataset text: escape it)."""

    sample_id: str = ""
    source_prompt: str | None = None
    target_prompt: str | None = None
    edit_type: str | None = None


@dataclass
class Report:
    run: RunData
    rows: list[Row]
    by_type: list[Row]
    tradeoffs: list[Picture] = field(default_factory=list)
    sweeps: list[Picture] = field(default_factory=list)
    cost: Picture | None = None
    grids: list[GridPicture] = field(default_factory=list)
    grid_total: int = 0  # (sample, seed) pairs the run has; ``grids`` shows the first ones
    attention: list[Picture] = field(default_factory=list)
    figures: list = field(default_factory=list, repr=False)  # the drawn Figures, when asked to keep them

    @property
    def labels(self) -> list[str]:
        """What is untrained behind the report's numbers (``RunData.caveats``)."""
        return self.run.caveats

    @property
    def metrics(self) -> list[str]:
        return self.run.metric_names


def build_report(run_dir, planes: list[str] | None = None, n_grid: int = 3, figures: bool = True,
                 keep_figures: bool = False) -> Report:  # fmt: skip
    """Aggregate a run and, when ``figures``, draw its trade-off, cost and grid figures;
    ``keep_figures`` also keeps the matplotlib Figures in ``report.figures`` (for checks)."""
    run = load_run(run_dir)
    report = Report(run, summarize(run), summarize(run, by_edit_type=True))

    def to_png(fig) -> bytes:
        if keep_figures:
            report.figures.append(fig)
        return plots.png(fig)

    constant = plots.constant_metrics(report.rows, run.metric_names)
    chosen = plots.tradeoff_planes(run.metric_names, planes, constant)  # validates requested planes even without figures
    if not figures or not len(run.cells):
        return report
    for x, y in chosen:
        report.tradeoffs.append(Picture(f"tradeoff_{x}_{y}.png", f"Trade-off: {x} vs {y}, each method along its sweep.",
                                        to_png(plots.tradeoff_figure(report.rows, x, y, run.caveats))))  # fmt: skip
    report.sweeps = sweep_pictures(report.rows, run, to_png)
    report.cost = Picture("cost.png", "Cost per image.", to_png(plots.cost_figure(report.rows, run.caveats)))
    shown = replace(run, cells=independent_cells(run.cells))  # a grid tile is one cell: the independent edit
    every_pair = plots.grid_samples(shown)
    report.grid_total = len(every_pair)
    pairs = every_pair[:n_grid]
    sources = plots.backbone_sources(shown, [s for s, _ in pairs])
    for i, (sample_id, seed) in enumerate(pairs):
        source = sources[sample_id]
        sample = next((s for s in source.values() if isinstance(s, plots.Sample)), None)
        edit_type = shown.cells.loc[shown.cells["sample_id"] == sample_id, "edit_type"].iloc[0]
        report.grids.append(GridPicture(
            f"grid_{i}.png", f"Sample {sample_id}, seed {seed}: source with mask outlined, then each method's outputs.",
            to_png(plots.image_grid(shown, sample_id, seed, source)), sample_id,
            sample.source_prompt if sample else None, sample.target_prompt if sample else None, edit_type,
        ))  # fmt: skip
    report.attention = attention_pictures(shown, pairs)
    return report


def sweep_pictures(rows: list[Row], run: RunData, to_png=plots.png) -> list[Picture]:
    """One metric-vs-parameter figure per method and swept parameter, over the metrics that
    vary along that method's sweep (cost metrics have their own plot)."""
    reference = next((r for r in rows if r.is_reference), None)
    metrics = plots.quality_metrics(run.metric_names)
    pictures = []
    for method in run.methods:
        own = [r for r in rows if r.method == method]
        plotted = plots.plotted_params(method, [r.setting for r in own])  # a zipped follower rides along
        constant = plots.constant_metrics(own, metrics)
        shown = [m for m in metrics if m not in constant]
        if not shown:
            continue
        note = f" Constant along this sweep, not plotted: {', '.join(sorted(constant))}." if constant else ""
        for param in plotted:
            fig = plots.sweep_figure(method, own, param, shown, run.caveats, reference)
            dashed = f"; dashed: {REFERENCE_METHOD}" if reference else ""
            caption = f"{method}: each metric against {param} (mean, 95% CI bars; lines: its other swept parameters{dashed}).{note}"
            pictures.append(Picture(f"sweep_{method}_{param}.png", caption, to_png(fig)))
    return pictures


def attention_pictures(run: RunData, pairs: list[tuple[str, int]]) -> list[Picture]:
    """For the shown (sample, seed) pairs, each cell that saved attention maps (p2p's
    ``attention_maps``): its output beside the maps."""
    pictures = []
    for sample_id, seed in pairs:
        ok = run.cells[(run.cells["sample_id"] == sample_id) & (run.cells["seed"] == seed) & (run.cells["status"] == "ok")]
        for cell in ok.itertuples():
            output = run.run_dir / cell.output_path
            maps = output.with_suffix(".attention.png")
            if output.is_file() and maps.is_file():
                label = row_name(cell.method, setting_label(json.loads(cell.setting), _varying(run, cell.method)))
                caption = f"{label}, sample {sample_id}, seed {seed}: the output (left) and its cross-attention maps."
                pictures.append(Picture(f"attention_{len(pictures)}.png", caption, plots.beside(output, maps)))
    return pictures


def grid_note(report: Report) -> str:
    """How many (sample, seed) pairs have a grid, how to get all of them, and (an iterative run)
    that they show the independent edits."""
    shown, total = len(report.grids), report.grid_total
    if shown == total:
        note = f"Every sample and seed has a grid ({total})."
    else:
        note = (f"Grids for {shown} of {total} (sample, seed) pairs; for all: "
                f"editbench report {report.run.run_dir} --html PATH --grid {total}")  # fmt: skip
    if chained_note(report.run):
        note += (" Each tile is a turn's independent edit (from its recorded source), not the chained turn: "
                 "see the note under the results table.")  # fmt: skip
    return note


def _varying(run: RunData, method: str) -> list[str]:
    return varying_params(method, [json.loads(t) for t in run.settings(method)])[0]


# -- table contents, shared by Markdown and HTML -----------------------------------------------------------
def main_header(metrics: list[str], edit_type: bool = False, untrained: list[str] = ()) -> list[str]:
    """The main table's header; ``untrained``: metrics an untrained network made (marked)."""
    head = ["edit type"] * edit_type + ["method", "setting", "n", "failed", "skipped"]
    return head + metric_headers(metrics, untrained) + ["s/image", "NFE"]


def metric_headers(metrics: list[str], untrained: list[str] = ()) -> list[str]:
    """``name arrow``, with ``UNTRAINED_MARK`` on a metric an untrained extractor or judge made."""
    return [" ".join(p for p in (m, arrow(m), UNTRAINED_MARK * (m in untrained)) if p) for m in metrics]


#: A table's reminder: what is untrained is said once, at the top of the page (``caveat_lines``).
SMOKE_NOTE = "Smoke numbers: see the labels at the top of the page."


def caveat_lines(run: RunData) -> list[str]:
    """What a page says once, at its top: what is untrained (``RunData.caveats``), which columns
    carry ``UNTRAINED_MARK``, and the run's other notes."""
    lines = [plots.caveat(run.caveats)] if run.caveats else []
    if run.untrained_metrics:
        lines.append(f"{UNTRAINED_MARK}: made by an untrained extractor or judge ({', '.join(run.untrained_metrics)}).")
    if run.notes:
        lines.append("Run notes: " + "; ".join(run.notes) + ".")
    return lines


def main_cells(rows: list[Row], metrics: list[str], edit_type: bool = False,
               backbones: dict[str, str] | None = None) -> list[list[tuple[str, bool]]]:  # fmt: skip
    """Table body as (text, is_best) pairs; best is per column (per edit type when split).
    ``backbones`` (method -> backbone label, for a run of several): each method is named with its backbone."""
    best = {}
    for key in dict.fromkeys(r.edit_type for r in rows):
        idx = [i for i, r in enumerate(rows) if r.edit_type == key]
        for m in metrics:
            best.setdefault(m, set()).update(idx[j] for j in best_rows([rows[i] for i in idx], m))
    body = []
    for i, r in enumerate(rows):
        name = f"{r.method} (reference)" if r.is_reference else r.method
        if backbones and backbones.get(r.method):
            name += f" @ {backbones[r.method]}"
        line = [(r.edit_type, False)] * edit_type + [(name, False), (r.label, False), (r.n_text, False),
                                                     (str(r.failed), False), (str(r.skipped), False)]  # fmt: skip
        line += [(format_stat(r.metrics.get(m)), i in best[m]) for m in metrics]
        measured = measures_cost(r.method)
        line += [(_num(r.cost[k]) if measured else NOT_MEASURED, False) for k in ("time_s", "nfe")]
        body.append(line)
    return body


JUDGE_HEADER = ["method", "setting", "metric", "values", "judged", "ok", *FAILURE_CLASSES]
JUDGE_NOTE = ("Judge answers per method and setting: values = ok cells with a value; judged = values the judge was "
              "asked for (no_instruction: not asked); ok = scores; the other columns count each failure class "
              "(bench/metrics/judge_failures.py). A failure is NaN, never a score. With judge.samples k > 1, a judge "
              "metric's interval resamples items and each item's k answers; judge sd = the mean standard deviation "
              "of an item's k values; \"the samples never differed\": every item's k values were equal: the "
              "spread was not measured (e.g. greedy decoding, or a server applying a model's top_k 1).")  # fmt: skip


def judge_cells(rows: list[Row]) -> list[list[str]]:
    """One line per row and judge metric: values, judged, ok and the count of each failure class."""
    body = []
    for r in rows:
        for name, s in r.metrics.items():
            if is_judge(name) and s.per_image:
                counts = [s.n + s.n_nan, judged_count(s), s.n] + [s.failed(kind) for kind in FAILURE_CLASSES]
                body.append([r.method, r.label, name] + [str(c) for c in counts])
    return body


def judge_md(rows: list[Row]) -> list[str]:
    """The judge-answer table and the failure-rate warnings, when the rows have judge metrics."""
    body = judge_cells(rows)
    if not body:
        return []
    lines = ["", "Judge answers:", ""] + md_table(JUDGE_HEADER, body) + ["", JUDGE_NOTE]
    return lines + [f"\n> **Warning:** {md_text(w)}" for w in failure_rate_warnings(rows)]


def cost_cells(rows: list[Row]) -> list[list[str]]:
    body = []
    for r in rows:
        c = r.cost
        if not measures_cost(r.method):
            body.append([r.method, r.label, r.n_text] + [NOT_MEASURED] * (len(COST_HEADER)))
            continue
        prepares = has_preparation(r.method)
        reused = "n/a" if math.isnan(c["prep_reused"]) or not prepares else f"{int(c['prep_reused'])}/{r.ok}"
        spread = "—" if math.isnan(c["time_median"]) else f"{_num(c['time_median'])} [{_num(c['time_q1'])}, {_num(c['time_q3'])}]"
        body.append([r.method, r.label, r.n_text, _num(c["time_s"]), spread]
                    + [_num(c[k]) for k in ("gpu_time_s", "nfe", "grad_evals", "peak_mem_mb")]
                    + [str(int(c["prep_computed"])) if prepares else "—"] + [_num(c[k]) for k in ("prep_time_s", "prep_nfe", "prep_grad_evals")]
                    + [reused])  # fmt: skip
    return body


def method_backbones(run: RunData) -> dict[str, str] | None:
    """Method -> backbone label for a run of several backbones; None for a run of one."""
    if len(run.backbones) < 2:
        return None
    return {method: run.backbone_of(method) for method in run.methods}


def backbone_line(label: str, described: dict) -> tuple[str, str]:
    """The provenance line of one backbone of a run of several: label, family, dtype, size rule, fingerprint."""
    spec, fp = described.get("spec") or {}, described.get("fingerprint") or {}
    rule = (described.get("images") or {}).get("rule") or f"{described.get('resolution', '?')} px"
    dtype = fp.get("dtype") or spec.get("dtype", "?")
    return (f"backbone {label}",
            f"{described.get('family', '?')}, {dtype}, {rule}; fingerprint {fp.get('id', 'unknown')}")


def provenance(run: RunData) -> list[tuple[str, str]]:
    """(field, value) pairs of the run's provenance, as plain text."""
    m = run.manifest
    bb = m.get("backbone") or {}
    spec = bb.get("spec") or {}
    fp = bb.get("fingerprint") or {}
    git = m.get("git") or {}
    config = m.get("config") or {}
    packages = ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items() if v)
    device = m.get("device") or {}
    commit = git.get("commit") or "unknown"
    weights = ", ".join(f"{k} {v[:12]}" for k, v in (fp.get("weights_sha256") or {}).items())
    sets = [("set-level metrics", f"against {run.set_n_source} source images")] if run.set_n_source else []
    sets += [backbone_line(label, info) for label, info in run.backbones.items()] if len(run.backbones) > 1 else []
    sets += [("images", m["images"]["rule"])] if "images" in m and len(run.backbones) < 2 else []
    sets += [("judge", run.judge_line)] if run.judge_line else []
    return [
        ("run", str(run.run_dir)),
        ("created", str(m.get("created", "unknown"))),
        ("backbone", f"{spec.get('name', '?')} ({bb.get('folder', '')}), {fp.get('dtype') or spec.get('dtype', '?')}, "
                     f"{fp.get('scheduler') or spec.get('scheduler', '?')} scheduler, {bb.get('resolution', '?')} px"),
        ("backbone fingerprint", f"{fp.get('id', 'unknown')}" + (f" (weights sha256: {weights})" if weights else "")),
        ("device", ", ".join(f"{k}={v}" for k, v in device.items()) or "unknown"),
        ("packages", packages or "unknown"),
        ("commit", commit + (" (uncommitted changes)" if git.get("dirty") else "")),
        ("dataset", dataset_text(config.get("dataset") or {})),
        ("seeds", json.dumps(config.get("seeds", []))),
        ("command", " ".join(m.get("command", []))),
    ] + sets  # fmt: skip


def dataset_text(spec: dict) -> str:
    """A dataset spec as readable fields (``name: sample; limit: 2``), unset fields left out."""
    fields = [f"{k.replace('_', ' ')}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
              for k, v in spec.items() if v not in (None, "", [])]  # fmt: skip
    return "; ".join(fields) or "unknown"


def _num(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.4g}"


# -- Markdown ------------------------------------------------------------------------------------------------
def md_text(text) -> str:
    """Dataset text safe inside a Markdown table: HTML escaped, pipes and newlines neutralised."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def md_code(text) -> str:
    """Text shown verbatim (an error message, whose ``<``, ``&`` and ``*`` must read as written): a code span."""
    text = str(text).replace("\n", " ")
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_table(header: list[str], body: list[list]) -> list[str]:
    def cell(c):
        text, best = c if isinstance(c, tuple) else (c, False)
        return f"**{md_text(text)}**" if best else md_text(text)

    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]


def _incomplete_md(run: RunData) -> list[str]:
    note = incomplete_note(run)
    return [f"**{md_text(note)}**", ""] if note else []


def caveat_md(run: RunData) -> list[str]:
    """``caveat_lines`` as Markdown: the untrained part bold."""
    lines = caveat_lines(run)
    return [f"**{md_text(line)}**" if i == 0 and run.caveats else md_text(line) for i, line in enumerate(lines)] + \
        [""] * bool(lines)


def smoke_md(run: RunData) -> list[str]:
    """A table's short reminder (``SMOKE_NOTE``), when something is untrained."""
    return [f"*{SMOKE_NOTE}*", ""] if run.caveats else []


def judge_line_md(run: RunData) -> list[str]:
    """The judge line a table with judge metrics carries (model@revision, template, decoding)."""
    return [f"Judge: {md_text(run.judge_line)}", ""] if run.judge_line else []


def _main_md(report: Report) -> list[str]:
    run = report.run
    lines = smoke_md(run) + judge_line_md(run)
    header = main_header(report.metrics, untrained=run.untrained_metrics)
    lines += md_table(header, main_cells(report.rows, report.metrics, backbones=method_backbones(run)))
    fixed = fixed_params(run)
    if fixed:
        described = [f"{md_text(m)}: " + ", ".join(f"{k}={md_text(v)}" for k, v in p.items()) for m, p in fixed.items()]
        lines.append("\nFixed parameters: " + "; ".join(described) + ".")
    lines.append(f"\nMetrics: mean [95% bootstrap CI] over ok cells; {N_NOTE}; **bold** = {BEST_RULE}.")
    chains = chained_note(run)
    if chains:
        lines.append(f"\n{md_text(chains)}")
    notes = nan_notes(report.rows)
    if notes:
        lines.append("\nNaN values (left out of the means, never dropped silently):\n")
        lines += [f"- {md_text(n)}" for n in notes]
    lines += judge_md(report.rows)
    errors = error_counts(run.cells)
    if errors:
        lines.append(f"\n{sum(n for _, n in errors)} failed cell(s); errors (cells each, most common first):\n")
        lines += [f"- {n} x {md_code(error)}" for error, n in errors[:MAX_ERRORS_SHOWN]]
        if len(errors) > MAX_ERRORS_SHOWN:
            lines.append(f"- ... and {len(errors) - MAX_ERRORS_SHOWN} more distinct errors (`editbench export` lists every cell)")
    return lines


def summary_markdown(run_dir: Path) -> str:
    """The main table of a run as Markdown (no figures)."""
    report = build_report(run_dir, figures=False)
    return "\n".join(_incomplete_md(report.run) + caveat_md(report.run) + _main_md(report)) + "\n"


def report_markdown(report: Report, assets: str | None = None) -> str:
    """The whole report as Markdown; figures are linked as ``<assets>/<name>`` when given."""
    run = report.run
    lines = [f"# editbench report: {md_text(run.run_dir.name)}", ""] + _incomplete_md(run) + caveat_md(run)
    lines += ["## Provenance", ""] + [f"- {k}: {md_text(v)}" for k, v in provenance(run)]
    lines += ["", "## Results", ""] + _main_md(report)
    if report.by_type and any(r.edit_type != "(none)" for r in report.by_type):
        metrics = run.image_metrics
        lines += ["", "## By edit type", ""] + smoke_md(run) + judge_line_md(run)
        lines += md_table(main_header(metrics, True, run.untrained_metrics),
                          main_cells(report.by_type, metrics, True, method_backbones(run)))
        notes = nan_notes(report.by_type)
        lines += [""] + [f"- {md_text(n)}" for n in notes] if notes else []
    lines += ["", "## Cost", ""] + smoke_md(run)
    lines += md_table(["method", "setting", "n"] + COST_HEADER, cost_cells(report.rows)) + ["", COST_NOTE]
    if run.throughput:
        lines += ["", md_text(run.throughput)]
    if assets is not None:
        figures = [("Trade-offs", report.tradeoffs), ("Metrics along each sweep", report.sweeps),
                   ("Cost plot", [report.cost] if report.cost else []), ("Samples", report.grids),
                   ("Attention maps", report.attention)]  # fmt: skip
        for title, pictures in figures:
            if pictures:
                lines += ["", f"## {title}", ""] + [md_text(grid_note(report)), ""] * (title == "Samples")
            for p in pictures:
                caption = md_text(_caption(p, run.caveats))
                lines += [f"![{md_text(p.caption)}]({assets}/{p.name})", "", f"*{caption}*", ""]
    return "\n".join(lines) + "\n"


def _caption(p: Picture, labels: list[str]) -> str:
    text = p.caption
    if isinstance(p, GridPicture) and p.source_prompt:
        text += (f" Source prompt: {p.source_prompt}; target prompt: {p.target_prompt or '—'};"
                 f" edit type: {p.edit_type or '—'}.")
    return f"{text} {SMOKE_NOTE}".strip() if labels else text


RANK_NOTE = ("Settings best first by mean; CI: 95% bootstrap interval, resampling samples; n: samples behind "
             "the mean. \"vs next\": "
             "better than the setting ranked after it, and \"best vs this\": the top setting better than this "
             "one, by the paired test (the 95% paired bootstrap interval of the mean difference over shared samples "
             "excludes 0): yes, or no (indistinguishable); n/a: not testable (set-level metric, no values).")  # fmt: skip


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else "yes" if value else "no"


def rank_markdown(report: Report, metric: str) -> str:
    """The "best setting" view: each method's settings ordered by ``metric`` (mean [CI], n),
    with which neighbouring differences the paired test can tell apart."""
    run = report.run
    if metric not in run.metric_names:
        raise ConfigError(f"--rank {metric!r}: the run has no such metric; it has {', '.join(run.metric_names)}")
    lines = [f"# Settings ranked by {md_text(metric)} {arrow(metric)}".rstrip(), ""]
    lines += _incomplete_md(run) + caveat_md(run)
    reference = next((r for r in report.rows if r.is_reference and metric in r.metrics), None)
    if reference is not None:
        lines += [f"Reference ({REFERENCE_METHOD}): {md_text(format_stat(reference.metrics[metric]))}.", ""]
    for method, ranked in rank_settings(report.rows, metric).items():
        rows = [r.row for r in ranked]
        best = best_rows(rows, metric)
        verdict = (f"best: {md_text(rows[0].label)}, distinguishable from every other setting" if best
                   else "no setting is distinguishable from all the others" if len(rows) > 1 else "one setting")  # fmt: skip
        lines += [f"## {md_text(method)}", "", f"{verdict}.", ""]
        body = [[str(i + 1), r.row.label, format_stat(r.row.metrics[metric]), str(r.row.metrics[metric].samples),
                 _verdict(r.above_next), _verdict(r.below_best)] for i, r in enumerate(ranked)]  # fmt: skip
        lines += md_table(["rank", "setting", metric, "n", "vs next", "best vs this"], body) + [""]
    lines.append(RANK_NOTE)
    return "\n".join(lines) + "\n"


def write_markdown(report: Report, path: Path) -> Path:
    """Write ``path`` and its figures in ``<path stem>_files/`` beside it."""
    path = output_file(path)
    assets = path.with_name(path.stem + "_files")
    pictures = report.tradeoffs + report.sweeps + ([report.cost] if report.cost else []) + report.grids + report.attention
    if pictures:
        assets.mkdir(exist_ok=True)
        for p in pictures:
            (assets / p.name).write_bytes(p.png)
    path.write_text(report_markdown(report, assets.name if pictures else None))
    return path
