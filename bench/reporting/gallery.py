"""The gallery (``editbench report RUN --gallery PATH.html``): every sample of a run on one page,
its source beside each method and setting's edit with the cell's metrics, to filter (method,
setting, edit type, each group) and sort by any metric, with the difference to a baseline row.

One HTML file and a folder beside it (``<name>_files/``, the sources with their masks outlined,
at the size the run's first backbone saw them, and at each other backbone's size where it
differs); the edits are the run folder's own PNGs, linked by relative path.
No server and no network: the page's script (``gallery_page/gallery.js``) draws the cards from
the run's data, embedded as JSON, a page at a time, and images load lazily, so runs of thousands
of cells open quickly. Every string from the run reaches the page as text (``textContent``), never as markup.
"""

import html
import json
import math
import os
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from bench.paths import output_file
from bench.reporting import plots
from bench.reporting.aggregate import REFERENCE_METHOD, RunData, higher_is_better, load_run, row_name
from bench.settings import setting_label, varying_params

MASK_OUTLINE = (255, 0, 0)


def write_gallery(run_dir, path) -> Path:
    """Write the gallery of ``run_dir`` to ``path`` (and its sources beside it); returns ``path``."""
    path = output_file(path).resolve()
    run = load_run(run_dir)
    assets = path.with_name(path.stem + "_files")
    assets.mkdir(exist_ok=True)
    data = gallery_data(run, path.parent, assets)
    path.write_text(render_gallery(data), encoding="utf-8")
    return path


def gallery_data(run: RunData, page_dir: Path, assets: Path) -> dict:
    """The page's data: the run's rows (method x setting), metrics with their direction, and one
    entry per (sample, seed) with its prompts, categories, source (``more_sources``: at the size
    of each other backbone whose cells saw it at another) and each row's cell (None: not run)."""
    rows = _rows(run)
    index = {(r["method"], r["setting_json"]): i for i, r in enumerate(rows)}
    metrics = run.image_metrics
    sources = plots.backbone_sources(run, list(dict.fromkeys(run.cells["sample_id"])))
    source_files, more_sources = {}, {}
    for i, (sample_id, by_backbone) in enumerate(sources.items()):
        distinct = _distinct(by_backbone)
        source_files[sample_id] = _source_file(distinct[0][1], assets / f"source_{i}.png", page_dir)
        more_sources[sample_id] = [
            {"backbone": label, "source": _source_file(s, assets / f"source_{i}_{k}.png", page_dir)}
            for k, (label, s) in enumerate(distinct[1:], 1)
        ]
    entries = []
    for (sample_id, seed), group in run.cells.groupby(["sample_id", "seed"], sort=False):
        source = next(iter(sources[sample_id].values()))
        sample = source if isinstance(source, plots.Sample) else None
        cells = [None] * len(rows)
        for cell in group.to_dict("records"):
            cells[index[(cell["method"], cell["setting"])]] = _cell(run, cell, metrics, page_dir)
        first = group.iloc[0]
        entries.append({
            "id": str(sample_id), "seed": int(seed),
            "edit_type": first["edit_type"] if isinstance(first["edit_type"], str) else "",
            "groups": {k: str(v) for k, v in (first["groups"] or {}).items()},
            "source": source_files[sample_id], "source_note": None if sample else str(source),
            "more_sources": more_sources[sample_id],
            "mask": bool(sample is not None and sample.mask is not None and sample.mask.sum() > 0),
            "prompts": _prompts(sample), "cells": cells,
        })  # fmt: skip
    return {
        "run": run.run_dir.name,
        "caveat": plots.caveat(run.labels),
        "metrics": [{"name": m, "higher": higher_is_better(m)} for m in metrics],
        "rows": [{k: r[k] for k in ("name", "method", "setting", "reference")} for r in rows],
        "groups": list(dict.fromkeys(k for e in entries for k in e["groups"])),
        "samples": entries,
    }


def _distinct(by_backbone: dict) -> list[tuple]:
    """(backbone label, source) of each distinct loaded source, in backbone order (backbones of
    one size rule share one, ``plots.backbone_sources``)."""
    distinct: list[tuple] = []
    for label, source in by_backbone.items():
        if all(source is not seen for _, seen in distinct):
            distinct.append((label, source))
    return distinct


def _rows(run: RunData) -> list[dict]:
    """Each method x setting of the run, in report order (the reference first)."""
    out = []
    for method in run.methods:
        texts = run.settings(method)
        varying, _ = varying_params(method, [json.loads(t) for t in texts])
        for text in texts:
            label = setting_label(json.loads(text), varying)
            out.append({"name": row_name(method, label), "method": method, "setting": label, "setting_json": text,
                        "reference": method == REFERENCE_METHOD})  # fmt: skip
    return out


def _cell(run: RunData, cell: dict, metrics: list[str], page_dir: Path) -> dict:
    """One cell as the page shows it: its image (relative to the page), status, error and metric values."""
    ok = cell["status"] == "ok"
    output = run.run_dir / cell["output_path"] if ok and isinstance(cell["output_path"], str) else None
    image = _relative(output, page_dir) if output is not None and output.is_file() else None
    values = [_number(cell[f"metric.{m}"]) for m in metrics]
    return {"image": image, "status": cell["status"], "error": None if ok else cell["error"], "values": values}


def _number(value) -> float | str | None:
    """A metric value for JSON: None where there is none (NaN), ``"inf"``/``"-inf"`` for infinities
    (PSNR of an identical image), which JSON cannot hold."""
    if value is None or math.isnan(value):
        return None
    return ("inf" if value > 0 else "-inf") if math.isinf(value) else float(value)


def _prompts(sample: plots.Sample | None) -> dict[str, str]:
    if sample is None:
        return {}
    found = {"source prompt": sample.source_prompt, "target prompt": sample.target_prompt,
             "instruction": sample.instruction}  # fmt: skip
    return {k: v for k, v in found.items() if v}


def _source_file(source, path: Path, page_dir: Path) -> str | None:
    """Save a loaded source (its mask outlined in red) as ``path``; its path relative to the page."""
    if not isinstance(source, plots.Sample):
        return None
    pixels = (source.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if source.mask is not None and source.mask.sum() > 0:
        pixels[outline(source.mask[0].numpy() > 0.5)] = MASK_OUTLINE
    Image.fromarray(pixels).save(path)
    return _relative(path, page_dir)


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` that touch a pixel outside it (4-neighbours; the border counts as outside)."""
    padded = np.pad(mask, 1)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inside


def _relative(path: Path, page_dir: Path) -> str:
    """``path`` as a URL relative to the page (a file URL when no relative path exists)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), page_dir)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).resolve().as_uri()


def script_json(data) -> str:
    """``data`` as JSON safe inside a ``<script>`` element: no ``<`` (so no ``</script>``), and
    the line separators JavaScript once rejected, escaped."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_gallery(data: dict) -> str:
    """The page: a shell, its style and script (package files beside this module) and the data."""
    folder = resources.files("bench.reporting") / "gallery_page"
    style, script = (folder / "gallery.css").read_text(), (folder / "gallery.js").read_text()
    title = f"editbench gallery: {data['run']}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="caveat" id="labels" hidden></p>'
        '<form id="controls"></form><p id="status"></p><div id="cards"></div>'
        '<p><button type="button" id="more" hidden>show more</button></p>'
        f'<script type="application/json" id="gallery-data">{script_json(data)}</script>'
        f"<script>{script}</script></body></html>"
    )
