"""The report as one self-contained HTML page: figures embedded as PNG data URIs, no
script, no network. Every string from the run (prompts, ids, paths, errors, config values)
goes through ``html.escape``: a prompt holding markup renders as text."""

import base64
import html
import json
from pathlib import Path

from bench.paths import output_file
from bench.reporting.aggregate import (
    BEST_RULE,
    N_NOTE,
    chained_note,
    failure_rate_warnings,
    fixed_params,
    incomplete_note,
    nan_notes,
)
from bench.reporting.report import (
    COST_HEADER,
    COST_NOTE,
    JUDGE_HEADER,
    JUDGE_NOTE,
    MAX_ERRORS_SHOWN,
    SMOKE_NOTE,
    GridPicture,
    Picture,
    Report,
    caveat_lines,
    cost_cells,
    grid_note,
    main_cells,
    judge_cells,
    main_header,
    method_backbones,
    provenance,
)
from bench.store import error_counts

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
.caveat { background: #fff3cd; border: 1px solid #e0c060; padding: .6em 1em; font-weight: 600; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
td.best { font-weight: 700; background: #e6f4ea; }
tr.reference td { color: #555; font-style: italic; }
dl.prov { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; font-size: 13px; }
dl.prov dt { font-weight: 600; } dl.prov dd { margin: 0; word-break: break-all; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #444; max-width: 1000px; }
pre { background: #f7f7f7; padding: .6em; font-size: 12px; overflow-x: auto; }
"""


def figures_meta(count: int) -> str:
    """The page's statement of how many figures it embeds, which the render check holds it to
    (a table-only page says 0)."""
    return f'<meta name="editbench-figures" content="{count}">'


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _caveat(run) -> str:
    """What is untrained, the marked columns and the run's notes (``caveat_lines``): said once, at the top."""
    lines = caveat_lines(run)
    return "".join(f'<p class="caveat">{esc(line)}</p>' if i == 0 and run.caveats else f"<p>{esc(line)}</p>"
                   for i, line in enumerate(lines))  # fmt: skip


def _smoke(labels: list[str]) -> str:
    """The short reminder a table carries: the labels themselves are at the top."""
    return f'<p class="caveat">{esc(SMOKE_NOTE)}</p>' if labels else ""


def _table(header: list[str], body: list[list], text_cols: int, reference: list[bool] | None = None) -> str:
    """A table in its own horizontally scrolling box; the first ``text_cols`` columns are
    text (left-aligned), the rest numbers."""
    head = [f'<th class="text">{esc(h)}</th>' if j < text_cols else f"<th>{esc(h)}</th>" for j, h in enumerate(header)]
    out = ['<div class="scroll"><table><thead><tr>', *head, "</tr></thead><tbody>"]
    for i, row in enumerate(body):
        out.append('<tr class="reference">' if reference and reference[i] else "<tr>")
        for j, cell in enumerate(row):
            text, best = cell if isinstance(cell, tuple) else (cell, False)
            classes = " ".join(c for c, on in (("text", j < text_cols), ("best", best)) if on)
            out.append(f'<td class="{classes}">{esc(text)}</td>' if classes else f"<td>{esc(text)}</td>")
        out.append("</tr>")
    return "".join(out + ["</tbody></table></div>"])


def _figure(p: Picture, labels: list[str]) -> str:
    data = base64.b64encode(p.png).decode("ascii")
    caption = esc(p.caption)
    if isinstance(p, GridPicture) and (p.source_prompt or p.edit_type):
        caption += (f"<br>Source prompt: <q>{esc(p.source_prompt or '—')}</q>; target prompt: "
                    f"<q>{esc(p.target_prompt or '—')}</q>; edit type: {esc(p.edit_type or '—')}.")  # fmt: skip
    if labels:
        caption += f"<br><em>{esc(SMOKE_NOTE)}</em>"
    image = f'<img alt="{esc(p.caption)}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _value(value) -> str:
    """A parameter value as text: an empty string or None shown as such, not as nothing."""
    if value is None or value == "":
        return "(none)" if value is None else "(empty)"
    return value if isinstance(value, str) else json.dumps(value)


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return "<p>NaN values (left out of the means, never dropped silently):</p><ul>" + "".join(
        f"<li>{esc(n)}</li>" for n in notes) + "</ul>"  # fmt: skip


def render_html(report: Report) -> str:
    """The report as one HTML document (a string)."""
    run, labels = report.run, report.labels
    metrics = report.metrics
    incomplete = incomplete_note(run)
    n_figures = len(report.tradeoffs + report.sweeps + report.grids + report.attention) + bool(report.cost)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">" + figures_meta(n_figures),
        f"<title>editbench report: {esc(run.run_dir.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>editbench report: {esc(run.run_dir.name)}</h1>",
        f"<p class=\"caveat incomplete\">{esc(incomplete)}</p>" if incomplete else "",
        _caveat(run),
        "<h2>Provenance</h2><dl class=\"prov\">",
        *(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in provenance(run)),
        "<dt>labels</dt><dd>" + esc(", ".join(run.labels) or "none") + "</dd></dl>",
        "<details><summary>resolved config</summary><pre>"
        + esc(json.dumps(run.manifest.get("config", {}), indent=2)) + "</pre></details>",
        "<h2>Results</h2>", _smoke(labels),
        _table(main_header(metrics, untrained=run.untrained_metrics),
               main_cells(report.rows, metrics, backbones=method_backbones(run)), 2,
               [r.is_reference for r in report.rows]),
        f"<p>Metrics: mean [95% bootstrap CI] over ok cells; {esc(N_NOTE)}; highlighted = "
        f"{esc(BEST_RULE)}.</p>",
        f"<p>{esc(chained_note(run))}</p>" if chained_note(run) else "",
    ]  # fmt: skip
    fixed = [[m, k, _value(v)] for m, p in fixed_params(run).items() for k, v in p.items()]
    if fixed:
        parts += ["<h3>Fixed parameters</h3>", _table(["method", "parameter", "value"], fixed, 3)]
    parts.append(_notes(nan_notes(report.rows)))
    judged = judge_cells(report.rows)
    if judged:
        parts += ["<h3>Judge answers</h3>", _table(JUDGE_HEADER, judged, 3), f"<p>{esc(JUDGE_NOTE)}</p>"]
        parts += [f"<p class=\"caveat\">Warning: {esc(w)}</p>" for w in failure_rate_warnings(report.rows)]
    errors = error_counts(run.cells)
    if errors:
        items = [f"<li>{n} x {esc(error)}</li>" for error, n in errors[:MAX_ERRORS_SHOWN]]
        more = len(errors) - MAX_ERRORS_SHOWN
        items += [f"<li>... and {more} more distinct errors (editbench export lists every cell)</li>"] if more > 0 else []
        parts.append(f"<p>{sum(n for _, n in errors)} failed cell(s); errors (cells each, most common first):</p><ul>"
                     + "".join(items) + "</ul>")  # fmt: skip
    if any(r.edit_type != "(none)" for r in report.by_type):
        image_metrics = run.image_metrics
        parts += ["<h2>By edit type</h2>", _smoke(labels),
                  _table(main_header(image_metrics, True, run.untrained_metrics),
                         main_cells(report.by_type, image_metrics, True, method_backbones(run)), 3,
                         [r.is_reference for r in report.by_type]),
                  _notes(nan_notes(report.by_type))]  # fmt: skip
    if report.tradeoffs:
        parts += ["<h2>Trade-offs</h2>"] + [_figure(p, labels) for p in report.tradeoffs]
    if report.sweeps:
        parts += ["<h2>Metrics along each sweep</h2>"] + [_figure(p, labels) for p in report.sweeps]
    cost = _table(["method", "setting", "n"] + COST_HEADER, cost_cells(report.rows), 2)
    parts += ["<h2>Cost</h2>", _smoke(labels), cost, f"<p>{esc(COST_NOTE)}</p>"]
    if report.run.throughput:
        parts.append(f"<p>{esc(report.run.throughput)}</p>")
    if report.cost:
        parts.append(_figure(report.cost, labels))
    if report.grids:
        parts += ["<h2>Samples</h2>", f"<p>{esc(grid_note(report))}</p>"] + [_figure(p, labels) for p in report.grids]
    if report.attention:
        parts += ["<h2>Attention maps</h2>"] + [_figure(p, labels) for p in report.attention]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write_html(report: Report, path) -> Path:
    path = output_file(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path
