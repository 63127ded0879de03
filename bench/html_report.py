"""The report as one self-contained HTML page: figures embedded as PNG data URIs, no
script, no network. Every string from the run (prompts, ids, paths, errors, config values)
goes through ``html.escape``: a prompt holding markup renders as text."""

import base64
import html
import json
from pathlib import Path

from . import plots
from .aggregate import BEST_RULE, fixed_params, incomplete_note, nan_notes
from .report import (
    COST_HEADER,
    COST_NOTE,
    GridPicture,
    Picture,
    Report,
    cost_cells,
    main_cells,
    main_header,
    provenance,
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
.caveat { background: #fff3cd; border: 1px solid #e0c060; padding: .6em 1em; font-weight: 600; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } td.text { text-align: left; }
td.best { font-weight: 700; background: #e6f4ea; }
tr.reference td { color: #555; font-style: italic; }
dl.prov { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; font-size: 13px; }
dl.prov dt { font-weight: 600; } dl.prov dd { margin: 0; word-break: break-all; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #444; max-width: 1000px; }
pre { background: #f7f7f7; padding: .6em; font-size: 12px; overflow-x: auto; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _caveat(labels: list[str]) -> str:
    return f'<p class="caveat">{esc(plots.caveat(labels))}</p>' if labels else ""


def _table(header: list[str], body: list[list], text_cols: int, reference: list[bool] | None = None) -> str:
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(body):
        out.append('<tr class="reference">' if reference and reference[i] else "<tr>")
        for j, cell in enumerate(row):
            text, best = cell if isinstance(cell, tuple) else (cell, False)
            classes = " ".join(c for c, on in (("text", j < text_cols), ("best", best)) if on)
            out.append(f'<td class="{classes}">{esc(text)}</td>' if classes else f"<td>{esc(text)}</td>")
        out.append("</tr>")
    return "".join(out + ["</tbody></table>"])


def _figure(p: Picture, labels: list[str]) -> str:
    data = base64.b64encode(p.png).decode("ascii")
    caption = esc(p.caption)
    if isinstance(p, GridPicture) and (p.source_prompt or p.edit_type):
        caption += (f"<br>Source prompt: <q>{esc(p.source_prompt or '—')}</q>; target prompt: "
                    f"<q>{esc(p.target_prompt or '—')}</q>; edit type: {esc(p.edit_type or '—')}.")  # fmt: skip
    if labels:
        caption += f"<br><em>{esc(plots.caveat(labels))}</em>"
    image = f'<img alt="{esc(p.caption)}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


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
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>editbench report: {esc(run.run_dir.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>editbench report: {esc(run.run_dir.name)}</h1>",
        f"<p class=\"caveat incomplete\">{esc(incomplete)}</p>" if incomplete else "",
        _caveat(labels),
        "<h2>Provenance</h2><dl class=\"prov\">",
        *(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in provenance(run)),
        "<dt>labels</dt><dd>" + esc(", ".join(labels) or "none") + "</dd></dl>",
        "<details><summary>resolved config</summary><pre>"
        + esc(json.dumps(run.manifest.get("config", {}), indent=2)) + "</pre></details>",
        "<h2>Results</h2>", _caveat(labels),
        _table(main_header(metrics), main_cells(report.rows, metrics), 2, [r.is_reference for r in report.rows]),
        f"<p>Metrics: mean [95% bootstrap CI] over ok cells; n = ok cells; highlighted = "
        f"{esc(BEST_RULE)}.</p>",
    ]  # fmt: skip
    fixed = fixed_params(run)
    if fixed:
        described = [f"{esc(m)}: " + ", ".join(f"{esc(k)}={esc(v)}" for k, v in p.items()) for m, p in fixed.items()]
        parts.append("<p>Fixed parameters: " + "; ".join(described) + ".</p>")
    parts.append(_notes(nan_notes(report.rows)))
    failures = run.cells[run.cells["status"] == "failed"]
    if len(failures):
        first = failures.head(20).itertuples()
        items = [f"<li>{esc(f.method)} / {esc(f.sample_id)}: {esc(f.error)}</li>" for f in first]
        parts.append(f"<p>{len(failures)} failed cell(s); errors (first 20):</p><ul>" + "".join(items) + "</ul>")
    if any(r.edit_type != "(none)" for r in report.by_type):
        image_metrics = run.image_metrics
        parts += ["<h2>By edit type</h2>", _caveat(labels),
                  _table(main_header(image_metrics, True), main_cells(report.by_type, image_metrics, True), 3,
                         [r.is_reference for r in report.by_type]),
                  _notes(nan_notes(report.by_type))]  # fmt: skip
    if report.tradeoffs:
        parts += ["<h2>Trade-offs</h2>"] + [_figure(p, labels) for p in report.tradeoffs]
    cost = _table(["method", "setting", "n"] + COST_HEADER, cost_cells(report.rows), 2)
    parts += ["<h2>Cost</h2>", _caveat(labels), cost, f"<p>{esc(COST_NOTE)}</p>"]
    if report.cost:
        parts.append(_figure(report.cost, labels))
    if report.grids:
        parts += ["<h2>Samples</h2>"] + [_figure(p, labels) for p in report.grids]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write_html(report: Report, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
