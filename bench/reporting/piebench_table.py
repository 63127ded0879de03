"""PIE-Bench's published table view of a run: ``editbench report RUN --table piebench``.

The seven columns of PIE-Bench's Table 1 (Ju et al., "PnP Inversion", ICLR 2024), in its order
and units: structure distance x10^3; background preservation PSNR, LPIPS x10^3, MSE x10^4,
SSIM x10^2 (both images times ``1 - mask``, scored over the whole image); CLIP similarity of
the whole edited image and of its edited region. One table over all samples, one per edit type
(PIE-Bench's ten, in its order). As in PIE-Bench's evaluation, cells whose value is NaN (a mask
covering the whole image) are left out of a mean; here they are also counted beside it. The 95%
bootstrap intervals of the ordinary report stay available with ``ci=True`` (``--ci``).

Published numbers can be shown beside a run (``--reference FILE``): a YAML file of entries with
a label, a source, optionally the editbench method and parameters the entry stands for, and
values in the table's units. ``references/piebench_table1.yaml`` is the shipped example.
"""

import dataclasses
import math
from dataclasses import dataclass

from bench.data import EDIT_TYPES
from bench.errors import ConfigError, unknown
from bench.metrics import OPTIONS
from bench.paths import output_file
from bench.registry import get_method
from bench.reporting.aggregate import Row, RunData, Stat, arrow, load_run, nan_notes, row_name, summarize
from bench.reporting.html_report import STYLE, _caveat, _smoke, _table, esc, figures_meta
from bench.reporting.report import caveat_md, md_table, md_text, smoke_md
from bench.yaml_file import read_yaml


@dataclass(frozen=True)
class Column:
    """One published column: the editbench metric behind it and the factor to its published unit."""

    metric: str
    title: str
    scale: float

    @property
    def header(self) -> str:
        return f"{self.title} {arrow(self.metric)}".strip()


COLUMNS = (
    Column("structure_distance", "Structure distance ×10³", 1e3),
    Column("psnr_bg", "PSNR", 1.0),
    Column("lpips_bg", "LPIPS ×10³", 1e3),
    Column("mse_bg", "MSE ×10⁴", 1e4),
    Column("ssim_bg", "SSIM ×10²", 1e2),
    Column("clip_score", "CLIP whole", 1.0),
    Column("clip_score_edited", "CLIP edited", 1.0),
)
METRICS = tuple(c.metric for c in COLUMNS)
EXPLANATION = (
    "Columns as PIE-Bench's Table 1, in its units: structure distance ×10³; background preservation "
    "(both images times 1 − mask, whole image) PSNR, LPIPS ×10³, MSE ×10⁴, SSIM ×10²; CLIP similarity of "
    "the whole edited image and of its edited region. Means over ok cells; NaN cells are left out of a mean, "
    "as PIE-Bench does, and counted beside it."
)


def scaled(stat: Stat, factor: float) -> Stat:
    """``stat`` in a unit ``factor`` times smaller (mean and interval scaled; counts kept)."""
    return dataclasses.replace(stat, mean=stat.mean * factor, low=stat.low * factor, high=stat.high * factor)


def value_text(stat: Stat | None, ci: bool = False, digits: int = 2) -> str:
    """A published-style value, ``digits`` decimals, with its NaN and missing counts (and CI when asked)."""
    if stat is None or (math.isnan(stat.mean) and not stat.n_nan and not stat.n_missing):
        return "—"
    text = "—" if math.isnan(stat.mean) else f"{stat.mean:.{digits}f}"
    if ci and stat.has_ci:
        text += f" [{stat.low:.{digits}f}, {stat.high:.{digits}f}]"
    gaps = [f"{stat.n_nan} NaN"] * bool(stat.n_nan) + [f"{stat.n_missing} missing"] * bool(stat.n_missing)
    return text + (f" ({', '.join(gaps)})" if gaps else "")


def column_stats(row: Row) -> list[Stat | None]:
    """The row's seven published values, in the published units (None where the run lacks the metric)."""
    return [scaled(row.metrics[c.metric], c.scale) if c.metric in row.metrics else None for c in COLUMNS]


# -- published references --------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """Published numbers of one method, in the table's units, and the rows of a run they stand beside."""

    label: str
    source: str
    values: dict[str, float]
    method: str | None = None  # editbench method the entry stands for; None: every method but the reference one
    params: dict = dataclasses.field(default_factory=dict)  # parameter values a row must have
    notes: str = ""

    def matches(self, row: Row) -> bool:
        if self.method is None:
            return not row.is_reference
        return row.method == self.method and all(row.setting.get(k) == v for k, v in self.params.items())

    def describe(self) -> str:
        wanted = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"method {self.method}" + (f" with {wanted}" if wanted else "") if self.method else "a method to compare"


REFERENCE_KEYS = ("label", "source", "values", "method", "params", "notes")


def load_references(path) -> list[Reference]:
    """Read a reference file: ``references:`` a list of entries (see ``references/piebench_table1.yaml``)."""
    raw = read_yaml(path, "reference")
    entries = raw.get("references") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"reference {path}: expected a mapping with 'references:', a non-empty list of entries")
    return [_reference(entry, f"reference {path}, entry {i + 1}") for i, entry in enumerate(entries)]


def _reference(entry, where: str) -> Reference:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(REFERENCE_KEYS)}")
    unknown_keys = sorted(set(entry) - set(REFERENCE_KEYS))
    if unknown_keys:
        raise ConfigError(f"{where}: unknown keys {unknown_keys}; allowed: {', '.join(REFERENCE_KEYS)}")
    for key in ("label", "source"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ConfigError(f"{where}: '{key}' must be a non-empty string (published numbers name their source)")
    values = entry.get("values")
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"{where}: 'values' must map columns ({', '.join(METRICS)}) to published numbers")
    for metric, value in values.items():
        if metric not in METRICS:
            raise ConfigError(f"{where}: unknown column {metric!r}; allowed: {', '.join(METRICS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {metric} = {value!r} is not a number")
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: 'params' must map parameter names to values")
    if params and not entry.get("method"):
        raise ConfigError(f"{where}: 'params' needs 'method' (the editbench method they belong to)")
    method = entry.get("method")
    if method:
        try:
            declared = [p.name for p in get_method(method).params]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        for name in params:
            if name not in declared:
                raise ConfigError(f"{where}: {unknown('parameter of ' + method, name, declared)}")
    return Reference(entry["label"].strip(), entry["source"].strip(), {k: float(v) for k, v in values.items()},
                     method, params, str(entry.get("notes") or ""))  # fmt: skip


# -- the view -------------------------------------------------------------------------------------------
@dataclass
class PieBenchTable:
    """What the PIE-Bench view shows: the run's rows overall and per edit type, and published references."""

    run: RunData
    rows: list[Row]
    by_type: list[Row]
    references: list[Reference]
    ci: bool = False

    @property
    def missing_metrics(self) -> list[str]:
        return [m for m in METRICS if m not in self.run.metric_names]


def build_piebench(run_dir, reference_path=None, ci: bool = False) -> PieBenchTable:
    """The PIE-Bench view of a run folder, with the references of ``reference_path`` when given."""
    run = load_run(run_dir)
    references = load_references(reference_path) if reference_path else []
    order = {name: i for i, name in enumerate(EDIT_TYPES)}
    by_type = sorted(summarize(run, by_edit_type=True), key=lambda r: order.get(r.edit_type, len(order)))
    return PieBenchTable(run, summarize(run), by_type, references, ci)


def header(edit_type: bool = False) -> list[str]:
    return ["edit type"] * edit_type + ["method", "setting", "n"] + [c.header for c in COLUMNS]


def body(rows: list[Row], ci: bool, edit_type: bool = False) -> list[list[str]]:
    out = []
    for r in rows:
        name = f"{r.method} (reference)" if r.is_reference else r.method
        values = [value_text(s, ci) for s in column_stats(r)]
        out.append([r.edit_type] * edit_type + [name, r.label, r.n_text] + values)
    return out


def reference_header() -> list[str]:
    return ["run row", "compared with"] + [c.header for c in COLUMNS]


def reference_body(view: PieBenchTable) -> list[list[str]]:
    """Per reference and matching row: the run's values, the published ones, and run − published."""
    out = []
    for ref in view.references:
        for row in (r for r in view.rows if ref.matches(r)):
            name = row_name(row.method, row.label)
            stats = column_stats(row)
            ours = [s.mean if s is not None else math.nan for s in stats]
            published = [ref.values.get(c.metric, math.nan) for c in COLUMNS]
            out.append([name, "this run"] + [value_text(s, view.ci) for s in stats])
            out.append([name, f"{ref.label} (published)"] + [_number(v) for v in published])
            out.append([name, "run − published"] + [_number(a - b, "+") for a, b in zip(ours, published)])
    return out


def reference_items(view: PieBenchTable) -> list[str]:
    """Plain-text lines under the reference table: references no row matched, then every source."""
    unmatched = [f"{ref.label}: no row of this run has {ref.describe()}"
                 for ref in view.references if not any(ref.matches(r) for r in view.rows)]  # fmt: skip
    sources = [f"{ref.label}: {ref.source}" + (f" ({ref.notes})" if ref.notes else "") for ref in view.references]
    return unmatched + sources


def _number(value: float, sign: str = "") -> str:
    return "—" if math.isnan(value) else f"{value:{sign}.2f}"


#: The feature network each column's metric runs (the pixel metrics need none), by metric_options key.
EXTRACTORS = {"structure_distance": "dino_model", "lpips_bg": "lpips_bg_net", "clip_score": "clip_model",
              "clip_score_edited": "clip_model"}  # fmt: skip


def fill_line(view: PieBenchTable) -> str | None:
    """One line above the tables when columns are empty: the command that fills them and its cost."""
    missing = view.missing_metrics
    if not missing:
        return None
    options = (view.run.manifest.get("config") or {}).get("metric_options") or {}
    keys = [EXTRACTORS[m] for m in missing if m in EXTRACTORS]
    networks = list(dict.fromkeys(("LPIPS " if key.startswith("lpips") else "") + str(options.get(key, OPTIONS[key].default))
                                  for key in keys))  # fmt: skip
    images = int((view.run.cells["status"] == "ok").sum())
    cost = f"one pass of {', '.join(networks)} over the run's {images} saved images" if networks else \
        f"pixel arithmetic over the run's {images} saved images"
    return (f"{len(missing)} of {len(COLUMNS)} columns are empty: this run did not compute {', '.join(missing)}. "
            f"Fill them with: editbench score {view.run.run_dir} --metrics {','.join(missing)} (no method runs again; "
            f"it costs {cost}; without local weights add --untrained-extractors: smoke numbers, labelled).")  # fmt: skip


def notes(view: PieBenchTable) -> list[str]:
    """Plain-text notes under the tables: NaN counts and their reasons."""
    out = []
    for rows in (view.rows, view.by_type):
        shown = [dataclasses.replace(r, metrics={m: s for m, s in r.metrics.items() if m in METRICS}) for r in rows]
        out += nan_notes(shown)
    return out


def _by_type_shown(view: PieBenchTable) -> bool:
    return any(r.edit_type != "(none)" for r in view.by_type)


# -- rendering --------------------------------------------------------------------------------------------
def piebench_markdown(view: PieBenchTable) -> str:
    """The view as Markdown (what the terminal shows, and ``--md``)."""
    run = view.run
    lines = [f"# PIE-Bench table: {md_text(run.run_dir.name)}", ""] + caveat_md(run) + [md_text(EXPLANATION), ""]
    fill = fill_line(view)
    lines += [f"**{md_text(fill)}**", ""] if fill else []
    lines += ["## All samples", ""] + md_table(header(), body(view.rows, view.ci))
    if _by_type_shown(view):
        lines += ["", "## By edit type", ""] + md_table(header(True), body(view.by_type, view.ci, True))
    if view.references:
        compared = reference_body(view)
        lines += ["", "## Published reference", ""] + smoke_md(run)
        lines += md_table(reference_header(), compared) + [""] if compared else []
        lines += [f"- {md_text(item)}" for item in reference_items(view)]
    remarks = notes(view)
    if remarks:
        lines += ["", "Notes:", ""] + [f"- {md_text(n)}" for n in remarks]
    return "\n".join(lines) + "\n"


def piebench_html(view: PieBenchTable) -> str:
    """The view as one self-contained HTML page (``--html``); every run string is escaped."""
    run = view.run
    title = f"PIE-Bench table: {esc(run.run_dir.name)}"
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{figures_meta(0)}<title>{title}</title>',
             f"<style>{STYLE}</style></head><body><h1>{title}</h1>", _caveat(run),
             f"<p>{esc(EXPLANATION)}</p>", f"<p><strong>{esc(fill_line(view))}</strong></p>" if view.missing_metrics else "",
             "<h2>All samples</h2>",
             _table(header(), body(view.rows, view.ci), 2, [r.is_reference for r in view.rows])]  # fmt: skip
    if _by_type_shown(view):
        parts += ["<h2>By edit type</h2>",
                  _table(header(True), body(view.by_type, view.ci, True), 3, [r.is_reference for r in view.by_type])]
    if view.references:
        compared = reference_body(view)
        parts += ["<h2>Published reference</h2>", _smoke(run.caveats)]
        parts += [_table(reference_header(), compared, 2)] if compared else []
        parts.append(_html_list(reference_items(view)))
    remarks = notes(view)
    if remarks:
        parts += ["<p>Notes:</p>", _html_list(remarks)]
    return "\n".join(p for p in parts if p) + "\n</body></html>\n"


def _html_list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def write_piebench(run_dir, reference_path=None, ci: bool = False, html_path=None, md_path=None) -> list[str]:
    """Write the view to ``html_path`` and/or ``md_path``; without either, return its Markdown
    (for the terminal). Returns the lines to print."""
    view = build_piebench(run_dir, reference_path, ci)
    if not (html_path or md_path):
        return [piebench_markdown(view)]
    written = []
    for path, render in ((html_path, piebench_html), (md_path, piebench_markdown)):
        if path:
            output_file(path).write_text(render(view), encoding="utf-8")
            written.append(f"PIE-Bench table -> {path}")
    return written
