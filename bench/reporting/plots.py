"""The report's figures (matplotlib, Agg, no pyplot state): trade-off curves, one
metric-vs-parameter plot per swept parameter, the cost plot, image grids, and the history plot.

Builders return a ``Figure``; ``png`` turns it into bytes no wider than the HTML page, and
``figure_overlaps`` says what on a figure a reader could not read (texts on texts, legends on
data), which the render check and the tests hold every report figure to. A run
with caveat labels gets a short marker in each title ("smoke numbers: see labels"); the full
label list is said once, on the page or table around the figure, so titles stay one line and
never widen a figure.
"""

import io
import json
import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from bench.data import DatasetSpec, Sample, load_dataset
from bench.errors import ConfigError
from bench.metrics import METRICS, CostMetric
from bench.reporting.aggregate import REFERENCE_METHOD, Row, RunData, arrow, row_name
from bench.samples import cell_frame, run_frames
from bench.settings import followers, setting_label, varying_params

#: Default trade-off axes, most wanted first: how strongly the edit follows the target
#: prompt (x), against how much of the source survives (y).
EDIT_STRENGTH = ("clip_score", "clip_score_edited", "clip_direction")
FIDELITY = ("lpips_bg", "psnr_bg", "ssim_bg", "mse_bg", "lpips_bg_masked", "psnr_bg_masked", "ssim_bg_masked",
            "mse_bg_masked", "structure_distance", "lpips", "psnr", "ssim", "mse")  # fmt: skip
DPI = 110
#: Widest PNG a figure is saved as: the HTML page is 1400 px with padding, so nothing is shrunk.
MAX_WIDTH_PX = 1300
SMOKE_MARK = "smoke numbers: see labels"


def caveat(labels: list[str]) -> str:
    """The line every table and page carries when the run has labels."""
    return f"Smoke numbers — {', '.join(labels)}: not comparable with published results." if labels else ""


def new_figure(**kwargs) -> Figure:
    """A constrained-layout figure on its own Agg canvas (text extents can be measured)."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes, cropped to its content, at most ``MAX_WIDTH_PX`` wide."""
    dpi = DPI
    while True:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        width = Image.open(buf).size[0]
        if width <= MAX_WIDTH_PX:
            return buf.getvalue()
        dpi = dpi * MAX_WIDTH_PX / width * 0.99  # text wider than the figure: save once more, smaller


def _title(fig: Figure, text: str, labels: list[str]) -> None:
    fig.suptitle(f"{text} — {SMOKE_MARK}" if labels else text, fontsize=9)


def constant_metrics(rows: list[Row], metrics: list[str]) -> set[str]:
    """Metrics whose finite means are all equal (or absent) over the non-reference rows:
    they separate nothing, so no plot spends an axis on them."""
    out = set()
    for m in metrics:
        means = [r.metrics[m].mean for r in rows if not r.is_reference and m in r.metrics]
        finite = np.array([v for v in means if np.isfinite(v)])
        if len(finite) < 2 or np.allclose(finite, finite[0], rtol=1e-9, atol=1e-12):
            out.add(m)
    return out


# -- trade-off curves -----------------------------------------------------------------------------
def tradeoff_planes(
    metrics: list[str], requested: list[str] | None = None, constant: set[str] = frozenset()
) -> list[tuple[str, str]]:
    """(x, y) metric pairs to plot: ``requested`` as ``"x:y"`` strings, else defaults.

    Defaults, from the metrics not in ``constant``: the first edit-strength metric the run
    has against the first fidelity metric, plus FID against CLIP score when both exist; a run
    with only one kind plots its first metric of that kind against another; a run with one
    informative metric gets no plane."""
    if requested:
        planes = []
        for text in requested:
            x, sep, y = text.partition(":")
            if not sep or x == y:
                raise ConfigError(
                    f"trade-off plane {text!r}: expected two different metrics as X:Y, e.g. clip_score:lpips_bg"
                )
            for name in (x, y):
                if name not in metrics:
                    raise ConfigError(
                        f"trade-off plane {text!r}: the run has no metric {name!r}; it has {', '.join(metrics)}"
                    )
            planes.append((x, y))
        return planes
    metrics = [m for m in quality_metrics(metrics) if m not in constant]
    strength = [m for m in EDIT_STRENGTH if m in metrics]
    fidelity = [m for m in FIDELITY if m in metrics]
    if strength and fidelity:
        planes = [(strength[0], fidelity[0])]
        if "fid" in metrics and "clip_score" in metrics:
            planes.append(("clip_score", "fid"))
        return planes
    if strength or fidelity:
        first = (strength or fidelity)[0]
        rest = [m for m in metrics if m != first]
        return [(first, rest[0])] if rest else []
    return [(metrics[0], metrics[1])] if len(metrics) >= 2 else []


def quality_metrics(metrics: list[str]) -> list[str]:
    """The quality metrics among ``metrics``: cost metrics have their own plot."""
    return [m for m in metrics if not (m in METRICS and issubclass(METRICS[m], CostMetric))]


def _sortable(value):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def plotted_params(method: str, settings: list[dict]) -> list[str]:
    """The swept parameters a figure spends an axis, a panel or a legend entry on: the varying
    ones except those that follow another (zipped, ``bench.settings.followers``)."""
    varying, _ = varying_params(method, settings)
    follow = followers(settings, varying)
    return [k for k in varying if k not in follow]


def _curves(method: str, rows: list[Row]) -> list[tuple[str, str | None, list[Row]]]:
    """A method's rows as curves: (legend label, swept parameter, rows in parameter order).

    The first plotted parameter is swept along a curve; each combination of the others is
    its own curve."""
    varying = plotted_params(method, [r.setting for r in rows])
    if not varying:
        return [(method, None, rows)]
    swept, others = varying[0], varying[1:]
    curves: dict[str, list[Row]] = {}
    for r in rows:
        curves.setdefault(setting_label(r.setting, others), []).append(r)
    return [
        (row_name(method, key), swept, sorted(rs, key=lambda r: _sortable(r.setting[swept])))
        for key, rs in curves.items()
    ]


def _err(stats) -> np.ndarray | None:
    if not any(s.has_ci for s in stats):
        return None
    return np.array([[s.mean - s.low, s.high - s.mean] if s.has_ci else [0, 0] for s in stats]).T


def tradeoff_figure(rows: list[Row], x: str, y: str, labels: list[str]) -> Figure:
    """Each method's curve over its swept parameter in the (x, y) plane, with 95% CI bars; the
    reference method is a star. Points are named in a key beside the plane (its parameter
    value, joined to its point by a thin line), so no name sits on another, on a point or on
    an error bar however close the points are; the legend goes under the plane."""
    texts: list[tuple[tuple[float, float], str, str]] = []
    series = []
    for method in list(dict.fromkeys(r.method for r in rows)):
        curves = _curves(method, [r for r in rows if r.method == method])
        for name, swept, curve in curves:
            pts = [r for r in curve if x in r.metrics and y in r.metrics]
            pts = [r for r in pts if np.isfinite(r.metrics[x].mean) and np.isfinite(r.metrics[y].mean)]
            if pts:
                series.append((method, name, swept, pts, len(curves) > 1))
    key_in = _key_width([f"{name}: {swept}=" + ", ".join(str(r.setting[swept]) for r in pts)
                         for _, name, swept, pts, _ in series if swept])  # fmt: skip
    fig = new_figure(figsize=(6.4 + key_in, 4.8))
    ax, key = fig.subplots(1, 2, width_ratios=[6.4, key_in]) if key_in else (fig.add_subplot(), None)
    if key is not None:
        key.axis("off")
    for method, name, swept, pts, several in series:
        xs, ys = [r.metrics[x] for r in pts], [r.metrics[y] for r in pts]
        reference = method == REFERENCE_METHOD
        style = dict(marker="*", markersize=12, linestyle="none") if reference else dict(marker="o")
        line = ax.errorbar([s.mean for s in xs], [s.mean for s in ys], xerr=_err(xs), yerr=_err(ys),
                           capsize=2, label=name, **style)  # fmt: skip
        if swept:
            at: dict[tuple, list] = {}  # settings that land on the same point share one name
            for r, sx, sy in zip(pts, xs, ys):
                at.setdefault((sx.mean, sy.mean), []).append(str(r.setting[swept]))
            prefix = f"{name}: " if several else ""
            color = line.lines[0].get_color()
            texts += [(xy, f"{prefix}{swept}={', '.join(values)}", color) for xy, values in at.items()]
    ax.set_xlabel(f"{x} {arrow(x)}".strip())
    ax.set_ylabel(f"{y} {arrow(y)}".strip())
    ax.grid(alpha=0.3)
    for axis in (ax.xaxis, ax.yaxis):
        min_span(ax, axis)
    handles, names = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)), fontsize=8)
    _title(fig, f"Trade-off: {x} vs {y} (mean, 95% CI)", labels)
    if texts:
        key_labels(ax, key, texts)
    return fig


KEY_FONT = 7


def _key_width(texts: list[str]) -> float:
    """Inches the point key needs for its longest name (0 without names)."""
    return 0.3 + max(len(t) for t in texts) * 0.52 * KEY_FONT / 72 if texts else 0.0


def key_labels(ax, key, texts: list[tuple[tuple[float, float], str, str]]) -> None:
    """Name each (data point, text, colour) in a column on the ``key`` axes beside ``ax``, at
    the point's height where it can be, moved just enough to keep one line of space between
    names, and joined to its point by a thin line of its colour."""
    fig = ax.figure
    fig.draw_without_rendering()  # settle the layout: display coordinates are final from here
    box = key.get_window_extent()
    gap = KEY_FONT * 1.35 * fig.dpi / 72
    order = sorted(texts, key=lambda t: ax.transData.transform(t[0])[1])
    wanted = [ax.transData.transform(xy)[1] for xy, _, _ in order]
    placed = []
    for y in wanted:  # bottom to top, each at least one line above the last
        placed.append(max(y, placed[-1] + gap) if placed else y)
    overflow = placed[-1] - (box.y1 - gap / 2) if placed else 0
    if overflow > 0:  # the column ran over the top: shift down, never below the axes' foot
        placed = [max(p - overflow, box.y0 + gap / 2 + i * gap) for i, p in enumerate(placed)]
    to_key = key.transAxes.inverted()
    for (xy, text, color), y in zip(order, placed):
        label = key.annotate(text, xy, xycoords=ax.transData, xytext=(0.02, to_key.transform((box.x0, y))[1]),
                             textcoords=key.transAxes, fontsize=KEY_FONT, color=color, ha="left", va="center",
                             annotation_clip=False, arrowprops=dict(arrowstyle="-", color=color, lw=0.5, alpha=0.5,
                                                                    shrinkA=0, shrinkB=3))  # fmt: skip
        label.set_in_layout(False)


def min_span(ax, axis, fraction: float = 0.05, floor: float = 1e-3) -> None:
    """Widen ``axis`` around its centre to at least ``fraction`` of the centre's magnitude (and
    ``floor``): one value, or values without intervals, no longer zoom to rounding noise."""
    get, set_ = (ax.get_ylim, ax.set_ylim) if axis is ax.yaxis else (ax.get_xlim, ax.set_xlim)
    low, high = get()
    centre = (low + high) / 2
    span = max(fraction * abs(centre), floor)
    if high - low < span:
        set_(centre - span / 2, centre + span / 2)


def _visible_texts(fig: Figure) -> list[Text]:
    """Every text a reader sees: titles, axis labels, tick labels inside the view, annotations,
    legend entries, the figure's own texts."""
    out = [fig._suptitle, fig._supxlabel, fig._supylabel, *fig.texts]
    for legend in fig.legends:
        out += legend.get_texts()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        out += [*ax.texts, *[c for c in ax.get_children() if isinstance(c, Text) and c is not ax.title]]
        out.append(ax.title)
        if ax.get_legend() is not None:
            out += ax.get_legend().get_texts()
        if not ax.axison:
            continue
        out += [ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks():
                if low - 1e-9 * (abs(low) + 1) <= tick.get_loc() <= high + 1e-9 * (abs(high) + 1):
                    out += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    seen, unique = set(), []
    for t in out:
        if t is not None and id(t) not in seen and t.get_visible() and t.get_text().strip():
            seen.add(id(t))
            unique.append(t)
    return unique


def figure_overlaps(fig: Figure) -> list[str]:
    """What a reader cannot read on ``fig``: texts whose rendered boxes intersect, and legends
    that cover a data point or a text (empty when nothing overlaps). Measured on the figure's
    renderer, so it holds for the PNG the figure is saved as."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    texts = _visible_texts(fig)
    # Text's own extent: an annotation's would include its leader line
    boxes = [Text.get_window_extent(t, renderer).padded(-0.5) for t in texts]
    out = [f"text {texts[i].get_text()!r} overlaps text {texts[j].get_text()!r}"
           for i in range(len(texts)) for j in range(i + 1, len(texts)) if boxes[i].overlaps(boxes[j])]  # fmt: skip
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    for legend in legends:
        frame = legend.get_window_extent(renderer)
        own = {id(t) for t in legend.get_texts()}
        out += [f"a legend covers text {t.get_text()!r}" for t, b in zip(texts, boxes)
                if id(t) not in own and frame.overlaps(b)]  # fmt: skip
        for ax in fig.axes:
            points = [xy for line in ax.get_lines() for xy in ax.transData.transform(line.get_xydata())]
            if any(frame.contains(px, py) for px, py in points if np.isfinite(px) and np.isfinite(py)):
                out.append(f"a legend covers data points of {ax.get_title() or 'a plot'!r}")
    return out


# -- metric against parameter ------------------------------------------------------------------------
def sweep_figure(method: str, rows: list[Row], param: str, metrics: list[str], labels: list[str],
                 reference: Row | None = None) -> Figure:  # fmt: skip
    """One panel per metric: the metric's mean (95% CI bars) against ``param`` for one method,
    one line per combination of its other plotted parameters (those zipped with ``param``
    ride along in its tick labels); the reference method's value, when given, as a dashed
    line. Non-numeric parameter values (two folders, say) are spaced evenly in run order, as
    points without lines between them: nothing lies between two categories."""
    settings = [r.setting for r in rows]
    varying, _ = varying_params(method, settings)
    follow = followers(settings, varying)
    others = [k for k in plotted_params(method, settings) if k != param]
    riders = [k for k, leader in follow.items() if leader == param]
    values = list(dict.fromkeys(json.dumps(r.setting[param]) for r in rows))
    numeric = all(isinstance(json.loads(v), (int, float)) and not isinstance(json.loads(v), bool) for v in values)
    position = {v: (json.loads(v) if numeric else i) for i, v in enumerate(values)}
    n_cols = min(3, len(metrics))
    n_rows = math.ceil(len(metrics) / n_cols)
    fig = new_figure(figsize=(3.7 * n_cols, 2.7 * n_rows + 0.5))
    axes = list(fig.subplots(n_rows, n_cols, squeeze=False).flat)
    lines: dict[str, list[Row]] = {}
    for r in rows:
        lines.setdefault(setting_label(r.setting, others), []).append(r)
    ride = {json.dumps(r.setting[param]): setting_label(r.setting, riders) for r in rows}
    for ax, metric in zip(axes, metrics):
        for key, line in lines.items():
            pts = sorted((r for r in line if metric in r.metrics and np.isfinite(r.metrics[metric].mean)),
                         key=lambda r: position[json.dumps(r.setting[param])])  # fmt: skip
            stats = [r.metrics[metric] for r in pts]
            ax.errorbar([position[json.dumps(r.setting[param])] for r in pts], [s.mean for s in stats],
                        yerr=_err(stats), marker="o", capsize=2, label=None if key == "—" else key,
                        linestyle="-" if numeric else "none")  # fmt: skip
        if reference is not None and metric in reference.metrics and np.isfinite(reference.metrics[metric].mean):
            ax.axhline(reference.metrics[metric].mean, color="gray", linestyle="--", linewidth=1, label=REFERENCE_METHOD)
        min_span(ax, ax.yaxis)
        ax.set_title(f"{metric} {arrow(metric)}".strip(), fontsize=9)
        ax.set_xlabel(param + (f" (zipped: {', '.join(riders)})" if riders else ""), fontsize=8)
        if not numeric or riders:
            chars = max(6, int(3.7 * 72 / len(values) / (0.6 * 7)) - 1)
            ticks = [tick_text(json.loads(v), ride[v] if riders else "", chars) for v in values]
            ax.set_xticks([position[v] for v in values], ticks, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.axis("off")
    handles, names = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)), fontsize=7)
    _title(fig, f"{method}: metrics vs {param} (mean, 95% CI)", labels)
    return fig


def tick_text(value, rider: str, chars: int) -> str:
    """A parameter value as a tick label: wrapped (long words broken) to ``chars`` per line,
    at most three lines, the last cut with "…"; a zipped parameter's value below it."""
    lines = textwrap.wrap(str(value), chars, break_long_words=True) or [str(value)]
    if len(lines) > 3:
        lines = lines[:2] + [lines[2][: chars - 1] + "…"]
    return "\n".join(lines + textwrap.wrap(rider, chars, break_long_words=True))


# -- cost -----------------------------------------------------------------------------------------------
#: A light blue: the black value labels drawn on the bars stay readable (contrast about 11:1).
BAR_COLOR = "#9ecae1"


def cost_figure(rows: list[Row], labels: list[str]) -> Figure:
    """Seconds per image and NFE per image for every method and setting (and peak GPU
    memory when the run measured it)."""
    names = [row_name(r.method, r.label) for r in rows]
    panels = [("time_s", "seconds / image"), ("nfe", "NFE / image")]
    if any(np.isfinite(r.cost["peak_mem_mb"]) for r in rows):
        panels.append(("peak_mem_mb", "peak GPU memory (MB)"))
    fig = new_figure(figsize=(3.2 * len(panels), 0.35 * len(rows) + 1.6))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    ypos = np.arange(len(rows))
    for ax, (key, title) in zip(axes, panels):
        values = [r.cost[key] for r in rows]
        ax.barh(ypos, [0 if math.isnan(v) else v for v in values], color=BAR_COLOR)
        for yy, v in zip(ypos, values):
            ax.text(0, yy, " n/a" if math.isnan(v) else f" {v:.3g}", va="center", fontsize=7)
        if not any(v > 0 for v in values):  # all 0 or n/a (NFE of external images): no axis around 0 ± 0.05
            ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ypos, names, fontsize=8)
    axes[0].invert_yaxis()
    _title(fig, "Cost per image (ok cells)", labels)
    return fig


# -- image grids ------------------------------------------------------------------------------------------
#: Output tiles per grid row; a longer sweep wraps onto further rows so a grid fits the page.
GRID_COLUMNS = 6
TILE_IN = 1.75
TILE_FONT = 7


def load_sources(run: RunData, sample_ids: list[str], backbone: str | None = None) -> dict[str, Sample | str]:
    """The source samples of ``sample_ids`` through the run's dataset spec, at the size rule of
    ``backbone``'s cells (its ``images`` in the manifest; None: the run's first backbone's); a
    sample that cannot be loaded maps to the error message instead."""
    spec = {k: tuple(v) if isinstance(v, list) else v for k, v in run.dataset.items()}
    frame = cell_frame(run_frames(run.manifest), backbone) if run.manifest.get("backbone") else None
    out: dict[str, Sample | str] = {}
    try:
        refs = {r.id: r for r in load_dataset(DatasetSpec(**spec))} if spec and frame else {}
    except Exception as exc:
        return {i: f"dataset unavailable: {exc}" for i in sample_ids}
    for sample_id in sample_ids:
        if sample_id not in refs:
            out[sample_id] = "source not found in the run's dataset"
            continue
        try:
            out[sample_id] = refs[sample_id].load(frame)
        except Exception as exc:
            out[sample_id] = str(exc)
    return out


def backbone_sources(run: RunData, sample_ids: list[str]) -> dict[str, dict[str | None, Sample | str]]:
    """Each sample's source at the size each backbone of the run's cells saw it (``load_sources``),
    by backbone label; backbones of one size rule share one loaded source."""
    frames = run_frames(run.manifest) if run.manifest.get("backbone") else {}
    loaded: dict = {}
    out: dict[str, dict] = {sample_id: {} for sample_id in sample_ids}
    for label in dict.fromkeys(run.cells["backbone"].dropna()) or [None]:
        frame = cell_frame(frames, label) if frames else None
        if frame not in loaded:
            loaded[frame] = load_sources(run, sample_ids, label)
        for sample_id in sample_ids:
            out[sample_id][label] = loaded[frame][sample_id]
    return out


def grid_samples(run: RunData) -> list[tuple[str, int]]:
    """Every (sample id, seed) pair of the run, in run order: each gets a grid, whatever its
    cells' status."""
    return list(dict.fromkeys(zip(run.cells["sample_id"], run.cells["seed"].astype(int))))


def _wrap(text: str) -> str:
    """``text`` wrapped to the width of a tile (at ``TILE_FONT``), long words broken."""
    chars = max(8, int(TILE_IN * 72 / (0.62 * TILE_FONT)))
    return "\n".join(textwrap.wrap(text, chars)) or text


def _placeholder(ax, shape: tuple[int, int], text: str) -> None:
    """A grey tile of the outputs' size holding a short note, so rows keep their alignment."""
    ax.imshow(np.full((*shape, 3), 0.92))
    ax.text(0.5, 0.5, _wrap(textwrap.shorten(text, 90, placeholder="…")), ha="center", va="center",
            fontsize=TILE_FONT, transform=ax.transAxes)  # fmt: skip


def _outline(ax, mask: np.ndarray) -> None:
    """Draw the mask's boundary in red; zero padding closes regions that touch the border."""
    h, w = mask.shape
    ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), np.pad(mask, 1), levels=[0.5], colors="red", linewidths=1.2)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def _tile_shape(run: RunData, source: Sample | str) -> tuple[int, int]:
    if isinstance(source, Sample):
        return tuple(source.image.shape[1:])
    for path in run.cells.loc[run.cells["status"] == "ok", "output_path"]:
        if (run.run_dir / path).is_file():
            width, height = Image.open(run.run_dir / path).size
            return height, width
    size = int((run.manifest.get("backbone") or {}).get("resolution") or 64)
    return size, size


def _source_tile(ax, source: Sample | str, shape: tuple[int, int], title: str) -> None:
    """The source with its mask outlined, or a placeholder saying why it is unavailable."""
    ax.axis("on")
    if isinstance(source, Sample):
        ax.imshow(source.image.permute(1, 2, 0).numpy())
        if source.mask is not None and source.mask.sum() > 0:
            _outline(ax, source.mask[0].numpy())
    else:
        _placeholder(ax, shape, f"source unavailable: {source}")
    has_mask = isinstance(source, Sample) and source.mask is not None
    ax.set_title(_wrap(title + " + mask" * has_mask), fontsize=TILE_FONT)


def image_grid(
    run: RunData, sample_id: str, seed: int, source: "Sample | str | dict[str | None, Sample | str]"
) -> Figure:
    """One sample: the source with its mask outlined, then each method's outputs along its
    sweep (wrapping after ``GRID_COLUMNS`` tiles), each titled with its parameter values.
    ``source``: one for every method, or one per backbone label (``backbone_sources``): a method
    whose backbone saw the source at another size than the tile above has its own source tile
    at the start of its row. Cells that did not give an image are grey tiles of their source's
    size saying why."""
    methods = run.methods
    settings = {m: run.settings(m) for m in methods}
    n_cols = 1 + min(GRID_COLUMNS, max(len(s) for s in settings.values()))
    first_row = {}
    for m in methods:
        first_row[m] = sum(math.ceil(len(settings[k]) / (n_cols - 1)) for k in methods[: methods.index(m)])
    n_rows = sum(math.ceil(len(s) / (n_cols - 1)) for s in settings.values())
    fig = new_figure(figsize=(TILE_IN * n_cols, (TILE_IN + 0.25) * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    by_backbone = source if isinstance(source, dict) else {}
    fallback = next(iter(by_backbone.values()), "no source") if by_backbone else source
    sources = {m: by_backbone.get(run.backbone_of(m), fallback) for m in methods}
    cells = run.cells[(run.cells["sample_id"] == sample_id) & (run.cells["seed"] == seed)]
    shown = None
    for method in methods:
        if sources[method] is not shown:  # the first method, or a backbone that saw another size
            title = "source" if shown is None else f"source at {run.backbone_of(method)}'s size"
            _source_tile(axes[first_row[method], 0], sources[method], _tile_shape(run, sources[method]), title)
            shown = sources[method]
    for method in methods:
        texts = settings[method]
        shape = _tile_shape(run, sources[method])
        varying, _ = varying_params(method, [json.loads(t) for t in texts])
        for k, text in enumerate(texts):
            ax = axes[first_row[method] + k // (n_cols - 1), 1 + k % (n_cols - 1)]
            ax.axis("on")
            cell = cells[(cells["method"] == method) & (cells["setting"] == text)]
            label = setting_label(json.loads(text), varying)
            ax.set_title(method if label == "—" else f"{method}\n{_wrap(label)}", fontsize=TILE_FONT)
            if not len(cell):
                _placeholder(ax, shape, "not run")
            elif cell.iloc[0]["status"] != "ok":
                _placeholder(ax, shape, f"{cell.iloc[0]['status']}: {cell.iloc[0]['error']}")
            elif (run.run_dir / cell.iloc[0]["output_path"]).is_file():
                ax.imshow(np.asarray(Image.open(run.run_dir / cell.iloc[0]["output_path"]).convert("RGB")))
            else:
                _placeholder(ax, shape, "output file missing")
    _title(fig, f"sample {sample_id}, seed {seed}", run.caveats)
    return fig


def beside(left: Path, right: Path) -> bytes:
    """Two pictures side by side at the height of the taller (a cell's output and its
    attention maps), as PNG bytes no wider than ``MAX_WIDTH_PX``."""
    a, b = Image.open(left).convert("RGB"), Image.open(right).convert("RGB")
    height = max(a.height, b.height)
    a, b = (im.resize((round(im.width * height / im.height), height), Image.LANCZOS) for im in (a, b))
    gap = 16
    canvas = Image.new("RGB", (a.width + gap + b.width, height), "white")
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + gap, 0))
    if canvas.width > MAX_WIDTH_PX:
        canvas = canvas.resize((MAX_WIDTH_PX, round(height * MAX_WIDTH_PX / canvas.width)), Image.LANCZOS)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# -- history ---------------------------------------------------------------------------------------------
def history_figure(series: dict[str, list], run_names: list[str], metric: str, labels: list[str]) -> Figure:
    """A metric across runs: one line per method and setting, x = run in time order, each tick
    naming its run and the n (samples) of its points. The legend goes beside the plot,
    and the labels, needed on a PNG that stands alone, under it, wrapped to its width."""
    width = min(MAX_WIDTH_PX / DPI - 0.5, max(6.4, 1.2 * len(run_names) + 3))
    fig = new_figure(figsize=(width, 4.4))
    ax = fig.add_subplot()
    n_at: dict[int, set[int]] = {}
    for name, points in series.items():
        xs = [i for i, _ in points]
        stats = [s for _, s in points]
        ax.errorbar(xs, [s.mean for s in stats], yerr=_err(stats), marker="o", capsize=2, label=name)
        for x, s in zip(xs, stats):  # n per run: partial runs average fewer values
            n_at.setdefault(x, set()).add(s.samples)
    ticks = ["\n".join(textwrap.wrap(name, 16) + [_n_range(n_at.get(i, set()))]) for i, name in enumerate(run_names)]
    ax.set_xticks(range(len(run_names)), ticks, fontsize=7)
    ax.set_xlim(-0.5, len(run_names) - 0.5)
    ax.set_ylabel(f"{metric} {arrow(metric)}".strip())
    ax.grid(alpha=0.3)
    min_span(ax, ax.yaxis)
    if series:
        fig.legend(loc="outside right upper", fontsize=7)
    if labels:
        fig.supxlabel("\n".join(textwrap.wrap(caveat(labels), int(width * 72 / (0.6 * 8)))), fontsize=8)
    _title(fig, f"History of {metric} (mean, 95% CI)", labels)
    _thin_ticks(ax)
    return fig


def _n_range(ns: set[int]) -> str:
    return "n=" + ("—" if not ns else str(min(ns)) if len(ns) == 1 else f"{min(ns)}–{max(ns)}")


def _thin_ticks(ax) -> None:
    """Keep every k-th x tick label, the smallest k at which neighbouring labels do not touch."""
    fig = ax.figure
    fig.draw_without_rendering()
    labels = ax.get_xticklabels()
    widest = max((t.get_window_extent().width for t in labels), default=0)
    spacing = ax.get_window_extent().width / max(1, len(labels))
    step = max(1, math.ceil((widest + 4) / spacing))
    for i, label in enumerate(labels):
        label.set_visible(i % step == 0)
