"""The report's figures as a reader sees them: short titles, nothing wider than the page,
grids for every sample with aligned tiles and readable titles, labels that never overlap,
and one metric-vs-parameter plot per swept parameter."""

import importlib.util
import io
from itertools import combinations
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.text import Text
from PIL import Image

from bench.diffusion.attention.figure import attention_figure, figure_image
from bench.reporting import plots
from bench.reporting.aggregate import load_run, summarize
from bench.reporting.history import history
from bench.reporting.report import build_report, grid_note, sweep_pictures
from bench.settings import followers
from tests.test_aggregate import cell, make_run

LABELS = ["untrained backbone", "untrained extractors: clip, dino, lpips, inception",
          "untrained classifier: resnet18 (seeded random weights)", "untrained CLIP guide: openai/clip-vit-base-patch32"]  # fmt: skip


def _boxes(fig, artists):
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def _disjoint(boxes) -> bool:
    return not any(a.overlaps(b) for a, b in combinations(boxes, 2))


def _width(png: bytes) -> int:
    return Image.open(io.BytesIO(png)).size[0]


def test_titles_are_one_short_line_whatever_the_labels_and_no_figure_is_wider_than_the_page(tmp_path):
    cells = [cell("reconstruct", {}, s, {"psnr": 30.0 + i, "ssim": 0.9}) for i, s in enumerate(("img0", "img1"))]
    cells += [cell("sdedit", {"t0": t0}, s, {"psnr": 20 - 10 * t0 + i, "ssim": 0.8 - t0 / 2 + i / 10})
              for t0 in (0.3, 0.5, 0.7) for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    run = load_run(make_run(tmp_path, "r", cells, labels=LABELS))
    rows = summarize(run)
    figures = [plots.tradeoff_figure(rows, "psnr", "ssim", LABELS), plots.cost_figure(rows, LABELS),
               plots.image_grid(run, "img0", 0, "no source"),
               plots.history_figure({"sdedit": [(i, rows[1].metrics["psnr"]) for i in range(3)]},
                                    ["2026-01-01 aaaaaaa"] * 3, "psnr", LABELS)]  # fmt: skip
    for fig in figures:
        title = fig.get_suptitle()
        assert "\n" not in title and len(title) < 70 and title.endswith(plots.SMOKE_MARK), title
        assert _width(plots.png(fig)) <= plots.MAX_WIDTH_PX
    unwrapped = ["".join(t.get_text().split()) for t in figures[-1].texts]
    assert "".join(plots.caveat(LABELS).split()) in unwrapped  # a history PNG stands alone: labels under the plot
    wide = plots.new_figure(figsize=(30, 2))  # a figure drawn too wide is saved smaller, never wider
    wide.suptitle("x")
    assert _width(plots.png(wide)) <= plots.MAX_WIDTH_PX


def test_every_sample_gets_a_grid_with_same_size_tiles_and_titles_that_never_overlap(tmp_path):
    long = "a photograph of a very small tabby cat sitting on a red sofa"
    settings = [{"t0": t0, "reference": f"{long} {i}"} for i, t0 in enumerate((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))]
    cells = [cell("reconstruct", {}, "img0", {"psnr": 30.0})]
    cells += [cell("sdedit", s, "img0", {"psnr": 20.0}) for s in settings[:5]]
    cells += [cell("sdedit", settings[5], "img0", status="failed"), cell("sdedit", settings[6], "img0", status="skipped")]
    cells += [cell("sdedit", settings[i], "img1", status="skipped") for i in (0, 7)]  # img1: no output at all
    run = load_run(make_run(tmp_path, "r", cells))
    assert plots.grid_samples(run) == [("img0", 0), ("img1", 0)]
    fig = plots.image_grid(run, "img0", 0, plots.load_sources(run, ["img0"])["img0"])
    tiles = [ax for ax in fig.axes if ax.axison]
    assert len(tiles) == 1 + 1 + 8  # source, reconstruct, 8 settings (one never run: a placeholder too)
    rows_used = {round(b.y0) for b in _boxes(fig, tiles)}
    assert len(rows_used) == 3  # reconstruct's row, then sdedit's 8 settings wrapped over two rows
    sizes = {(round(b.width), round(b.height)) for b in _boxes(fig, tiles)}
    assert len(sizes) == 1, sizes  # placeholders (failed, skipped, not run) are the outputs' size
    titles = [ax.title for ax in tiles]
    assert all(len(line) <= 40 for t in titles for line in t.get_text().splitlines())
    assert _disjoint(_boxes(fig, titles) + _boxes(fig, tiles))
    assert _width(plots.png(fig)) <= plots.MAX_WIDTH_PX


def test_trade_off_labels_never_overlap_and_constant_metrics_get_no_plane(tmp_path):
    # near-identical points (psnr 9.95 vs 9.94) are where fixed label offsets collide
    cells = [cell("sdedit", {"t0": t0}, s, {"psnr": 9.94 + t0 / 100 + i, "ssim": 0.5 + t0 / 1000 + i / 10, "mse": 1.0})
             for t0 in (0.1, 0.2, 0.3, 0.4, 0.5) for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    run = load_run(make_run(tmp_path, "r", cells, metrics=("psnr", "ssim", "mse")))
    rows = summarize(run)
    assert plots.constant_metrics(rows, run.metric_names) == {"mse"}
    assert plots.tradeoff_planes(run.metric_names, constant={"mse"}) == [("psnr", "ssim")]
    assert plots.tradeoff_planes(["clip_score", "lpips_bg", "psnr"], constant={"lpips_bg"}) == [("clip_score", "psnr")]
    fig = plots.tradeoff_figure(rows, "psnr", "ssim", [])
    labels = [t for ax in fig.axes for t in ax.texts if t.get_text().startswith("t0=")]
    assert sorted(t.get_text() for t in labels) == [f"t0={t}" for t in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert plots.figure_overlaps(fig) == []


def test_each_swept_parameter_gets_a_metric_plot_per_method_with_intervals(tmp_path):
    cells = [cell("reconstruct", {}, s, {"psnr": 30.0 + i, "ssim": 0.9}) for i, s in enumerate(("img0", "img1"))]
    cells += [cell("sdedit", {"t0": t0, "w": w}, s, {"psnr": 20 - 10 * t0 + w + i, "ssim": 0.5})
              for t0 in (0.3, 0.7) for w in (2, 7.5) for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    run = load_run(make_run(tmp_path, "r", cells))
    rows = summarize(run)
    pictures = sweep_pictures(rows, run)
    assert [p.name for p in pictures] == ["sweep_sdedit_t0.png", "sweep_sdedit_w.png"]
    assert all("Constant along this sweep, not plotted: ssim" in p.caption for p in pictures)
    fig = plots.sweep_figure("sdedit", [r for r in rows if r.method == "sdedit"], "t0", ["psnr"], [], rows[0])
    (ax,) = [a for a in fig.axes if a.axison]
    lines = [c for c in ax.containers if c.has_yerr]
    assert len(lines) == 2  # one per value of the other swept parameter, w, each with CI bars
    means = sorted(round(float(np.asarray(c.lines[0].get_ydata(), dtype=float)[0]), 6) for c in lines)
    assert means == [19.5, 25.0]  # t0=0.3: 20 - 3 + w + mean(i)
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())  # the reference level


def test_the_page_says_how_many_grids_it_shows_and_how_to_get_all(tmp_path):
    cells = [cell("sdedit", {"t0": 0.5}, s, {"psnr": 20.0 + i, "ssim": 0.5 + i / 10}, seed=seed)
             for seed in (0, 1) for i, s in enumerate(("img0", "img1", "img2"))]  # fmt: skip
    run_dir = make_run(tmp_path, "r", cells)
    report = build_report(run_dir, n_grid=1)
    assert report.grid_total == 6 and len(report.grids) == 1
    assert grid_note(report) == (f"Grids for 1 of 6 (sample, seed) pairs; for all: editbench report {run_dir} "
                                 "--html PATH --grid 6")  # fmt: skip


def test_attention_maps_have_full_token_labels_and_a_colour_bar_and_sit_beside_their_cell(tmp_path):
    tokens = [["<|startoftext|>", "a", "photographically", "cat", "<|endoftext|>"],
              ["<|startoftext|>", "a", "dog", "<|endoftext|>"]]  # fmt: skip
    fig = attention_figure(np.random.default_rng(0).random((2, 5, 8, 8)), tokens)
    titles = ["".join(ax.get_title().splitlines()) for ax in fig.axes if ax.get_title()]
    assert titles == tokens[0] + tokens[1]  # every token in full, wrapped rather than cut
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"] == ["attention / the token's peak"]
    run_dir = make_run(tmp_path, "r", [cell("p2p", {"w": 7.5}, "img0", {"psnr": 1.0, "ssim": 0.5})])
    (output,) = (run_dir / "images").rglob("*.png")
    figure_image(fig).save(output.with_suffix(".attention.png"))
    (picture,) = build_report(run_dir, n_grid=1).attention
    assert picture.caption == "p2p, sample img0, seed 0: the output (left) and its cross-attention maps."
    assert _width(picture.png) <= plots.MAX_WIDTH_PX


# -- readable figures (issue 28, item 9) ------------------------------------------------------------
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_report_render.py"
_spec = importlib.util.spec_from_file_location("check_report_render", SCRIPT)
checker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checker)


def _crowded_run(tmp_path):
    """The conditioning sweep's shape: points closer together than their names and CI bars."""
    samples = ("img0", "img1")
    cells = [cell("reconstruct", {}, s, {"psnr": 10.9 + 2 * i, "ssim": 0.08 + i / 50}) for i, s in enumerate(samples)]
    cells += [cell("ilvr", {"N": n, "cond_stop": c}, s,
                   {"psnr": 11 + n / 1000 + c / 100 + 2 * i, "ssim": 0.05 + n / 1e4 + i / 50})
              for n in (2, 4, 8, 16) for c in (0.5, 1.0) for i, s in enumerate(samples)]  # fmt: skip
    cells += [cell("sdedit", {"t0": t}, s, {"psnr": 11.02 + t / 100 + 2 * i, "ssim": 0.051 + i / 50})
              for t in (0.5, 0.8) for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    return load_run(make_run(tmp_path, "crowded", cells))


def test_figure_overlaps_catches_texts_on_texts_and_legends_on_data():
    fig = plots.new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 0.5, 1], [0, 0.5, 1], marker="o", label="line")
    ax.text(0.5, 0.5, "one label")
    ax.text(0.5, 0.5, "another label")
    assert plots.figure_overlaps(fig) == ["text 'one label' overlaps text 'another label'"]
    ax.texts[1].remove()
    ax.legend(loc="center")
    assert any("a legend covers data points" in o for o in plots.figure_overlaps(fig))


def test_crowded_trade_off_names_sit_in_a_key_clear_of_each_other_points_and_bars(tmp_path):
    rows = summarize(_crowded_run(tmp_path))
    fig = plots.tradeoff_figure(rows, "psnr", "ssim", LABELS)
    assert plots.figure_overlaps(fig) == []
    plane = fig.axes[0]
    names = [t for ax in fig.axes for t in ax.texts]
    assert len(names) == 8 + 2  # ilvr: 4 N x 2 curves, sdedit: 2 t0
    assert "ilvr cond_stop=0.5: N=2" in {t.get_text() for t in names}  # several curves: the name says which
    box = plane.get_window_extent()
    assert not any(Text.get_window_extent(t).overlaps(box) for t in names)  # none on a point or an error bar
    assert plane.get_legend() is None  # the legend is under the plane, not over the data


def test_every_report_figure_of_a_crowded_run_passes_the_render_checks_figure_part(tmp_path):
    run = _crowded_run(tmp_path)
    assert checker.figure_problems(run.run_dir, n_grid=0) == []


def test_long_sweep_values_are_wrapped_not_replaced_by_an_ellipsis(tmp_path):
    values = ["ddim", "negative_prompt", "a_really_long_inversion_name_that_goes_on_and_on_and_on_and_on_and_on_and_on"]
    cells = [cell("p2p", {"inversion": v}, s, {"psnr": 10.0 + k + i, "ssim": 0.5 + k / 10})
             for k, v in enumerate(values) for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    rows = summarize(load_run(make_run(tmp_path, "r", cells)))
    fig = plots.sweep_figure("p2p", rows, "inversion", ["psnr"], [])
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "[...]" not in " ".join(ticks)
    assert ticks[1].replace("\n", "") == "negative_prompt"  # whole, over two lines
    assert ticks[2].endswith("…") and len(ticks[2].splitlines()) == 3  # very long: three lines, then cut
    assert plots.figure_overlaps(fig) == []


def test_a_panel_whose_values_barely_differ_keeps_a_readable_y_span(tmp_path):
    cells = [cell("sdedit", {"t0": 0.5}, "img0", {"psnr": 11.0, "ssim": 0.5})]
    cells += [cell("sdedit", {"t0": 0.7}, "img0", {"psnr": 12.0, "ssim": 0.50001})]  # one cell each: no CI
    rows = summarize(load_run(make_run(tmp_path, "r", cells)))
    fig = plots.sweep_figure("sdedit", rows, "t0", ["ssim"], [])
    low, high = fig.axes[0].get_ylim()
    assert high - low >= 0.05 * 0.5 - 1e-12 and low < 0.5 < high


def test_a_zipped_parameter_gets_no_panel_and_splits_no_legend(tmp_path):
    zipped = list(zip(["ddim", "null_text", "negative_prompt", "direct", "ddpm"], [1.0, 1.0, 1.0, 1.0, 7.5]))
    cells = [cell("p2p", {"inversion": inv, "inversion_w": w, "cross_replace_steps": c}, s,
                  {"psnr": 10.0 + k + c + i, "ssim": 0.5 + k / 10 + c / 5})
             for k, (inv, w) in enumerate(zipped) for c in (0.4, 0.8) for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    run = load_run(make_run(tmp_path, "r", cells))
    rows = summarize(run)
    settings = [r.setting for r in rows]
    assert followers(settings, ["inversion", "inversion_w", "cross_replace_steps"]) == {"inversion_w": "inversion"}
    assert followers([{"w": 3, "steps": 20}, {"w": 7.5, "steps": 50}], ["w", "steps"]) == {"steps": "w"}
    assert followers([{"a": a, "b": b} for a in (1, 2) for b in (1, 2)], ["a", "b"]) == {}  # a grid: no follower
    pictures = sweep_pictures(rows, run)
    assert sorted(p.name for p in pictures) == ["sweep_p2p_cross_replace_steps.png", "sweep_p2p_inversion.png"]
    fig = plots.sweep_figure("p2p", rows, "cross_replace_steps", ["psnr"], [])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"inversion={inv}" for inv, _ in zipped]
    fig = plots.sweep_figure("p2p", rows, "inversion", ["psnr"], [])
    assert fig.axes[0].get_xlabel() == "inversion (zipped: inversion_w)"
    assert fig.axes[0].get_xticklabels()[-1].get_text() == "ddpm\ninversion_w\n=7.5"
    trade = plots.tradeoff_figure(rows, "psnr", "ssim", [])
    assert [t.get_text() for t in trade.legends[0].get_texts()] == ["p2p cross_replace_steps=0.4",
                                                                     "p2p cross_replace_steps=0.8"]  # fmt: skip


def _luminance(color) -> float:
    channels = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(color)]
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def test_cost_bar_values_contrast_with_their_bars(tmp_path):
    run = load_run(make_run(tmp_path, "r", [cell("sdedit", {"t0": 0.5}, "img0", {"psnr": 1.0, "ssim": 0.5})]))
    rows = summarize(run)
    fig = plots.cost_figure(rows, [])
    ax = fig.axes[0]
    bar, value = ax.patches[0], ax.texts[0]
    lighter, darker = sorted((_luminance(bar.get_facecolor()), _luminance(value.get_color())), reverse=True)
    assert (lighter + 0.05) / (darker + 0.05) >= 7  # WCAG AAA for small text (tab:blue under black: 4.3)


def test_history_of_runs_in_the_same_minute_has_distinct_readable_ticks_and_a_legend_off_the_data(tmp_path):
    runs = []
    for k, second in enumerate(("05", "40", "40")):
        cells = [cell("sdedit", {"t0": t}, s, {"psnr": 20.0 + t / 100 + i + k / 1000, "ssim": 0.5})
                 for t in (0.3, 0.5, 0.7) for i, s in enumerate(("img0", "img1"))]  # fmt: skip
        runs.append(make_run(tmp_path, f"run{k}", cells, created=f"2026-01-01T10:00:{second}+00:00"))
    h = history(runs, metric="psnr")
    assert len(set(h.names)) == 3 and h.names[0] == "2026-01-01 10:00:05 abc1234"
    fig = plots.history_figure(h.series, h.names, h.metric, LABELS)
    assert plots.figure_overlaps(fig) == []
    assert all(not ax.texts for ax in fig.axes)  # n is in each tick, not piled on the points
    assert fig.axes[0].get_xticklabels()[0].get_text().endswith("n=2")
    assert fig.legends and not fig.legends[0].get_window_extent().overlaps(fig.axes[0].get_window_extent())
