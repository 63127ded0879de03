"""What reports say is untrained, and options that do not apply (issue 39 items 12 and 13)."""

import json

import numpy as np

from bench.execution.runner import setting_slug
from bench.reporting import plots
from bench.reporting.aggregate import load_run, summarize
from bench.reporting.category_table import category_markdown
from bench.reporting.history import history, history_markdown
from bench.reporting.report import SMOKE_NOTE, build_report, summary_markdown
from tests.test_aggregate import cell, make_run

EXTERNAL = {"folder": "/outputs/model-a", "manifest": "", "hub": "", "split": "test", "image_column": "edited_image",
            "id_column": "idx", "setting_column": "model", "setting": ""}  # fmt: skip
SIZE_NOTE = "external images: a resolution-square image is used as is"
EXTRACTOR = "untrained extractor clip (seeded random weights) behind ssim"


def _external_run(tmp_path, labels):
    cells = [cell("external", EXTERNAL, s, {"psnr": 20.0 + i, "ssim": 0.5 + i / 10})
             for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    return make_run(tmp_path, "ext", cells, labels=labels)


def test_a_run_of_external_images_is_not_labelled_with_the_backbone_it_did_not_use(tmp_path):
    text = summary_markdown(_external_run(tmp_path, ("untrained backbone", SIZE_NOTE)))
    assert "untrained backbone" not in text and "Smoke numbers" not in text and SMOKE_NOTE not in text
    assert f"Run notes: {SIZE_NOTE}" in text


def test_what_is_untrained_is_said_once_and_marks_its_columns(tmp_path):
    run_dir = _external_run(tmp_path, ("untrained backbone", EXTRACTOR))
    text = summary_markdown(run_dir)
    assert text.count(EXTRACTOR) == 1 and "untrained backbone" not in text
    assert "| psnr ↑ | ssim ↑ † |" in text and "†: made by an untrained extractor or judge (ssim)." in text
    tables = category_markdown(run_dir)
    assert tables.count(EXTRACTOR) == 1 and "(smoke numbers)" not in tables


def test_the_categories_table_names_a_setting_once_with_direction_arrows(tmp_path):
    cells = [cell("sdedit", {"t0": t0, "w": 7.5}, s, {"psnr": 20.0 + i}) for t0 in (0.3, 0.7)
             for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    text = category_markdown(make_run(tmp_path, "r", cells))
    assert "| edit_type | method | setting | n | failed | skipped | psnr ↑ |" in text
    assert "| change_object | sdedit | t0=0.3 | 2 | 0 | 0 |" in text and "sdedit t0=0.3 | t0=0.3" not in text


def test_options_that_do_not_apply_are_left_out_of_fixed_parameters_and_folder_names(tmp_path):
    report = build_report(_external_run(tmp_path, ()), figures=False)
    fixed = summary_markdown(report.run.run_dir).split("Fixed parameters: ")[1].splitlines()[0]
    assert fixed == "external: folder=/outputs/model-a."
    slug = setting_slug(EXTERNAL, "external")
    assert slug.startswith("folder=-outputs-model-a_") and "manifest" not in slug and "split" not in slug


def test_sweep_panels_join_numeric_settings_only_and_a_zero_nfe_axis_starts_at_zero(tmp_path):
    cells = [cell("external", {**EXTERNAL, "folder": f"/outputs/{m}"}, s, {"psnr": 20.0 + i + j, "ssim": 0.5 + i / 10},
                  nfe=0) for j, m in enumerate(("a", "b")) for i, s in enumerate(("img0", "img1"))]  # fmt: skip
    rows = summarize(load_run(make_run(tmp_path, "r", cells)))
    figure = plots.sweep_figure("external", rows, "folder", ["psnr"], [])
    (line,) = [line for line in figure.axes[0].get_lines() if line.get_marker() == "o"]  # not the error bars' caps
    assert line.get_linestyle() == "None"  # two folders: points, no line between them
    cost = plots.cost_figure(rows, [])
    assert cost.axes[1].get_xlim() == (0.0, 1.0)  # NFE 0 everywhere: not an axis of 0 ± 0.05


def test_history_keeps_runs_on_different_backbones_apart_and_says_so(tmp_path):
    cells = [cell("sdedit", {"t0": 0.5}, s, {"psnr": 20.0}) for s in ("img0", "img1")]
    runs = tmp_path / "runs"
    make_run(runs, "a", cells, fingerprint="fp-a")
    make_run(runs, "b", cells, fingerprint="fp-b", created="2026-01-02T00:00:00+00:00")
    h = history([runs], "psnr")
    assert sorted(h.series) == ["sdedit on tiny fp-a", "sdedit on tiny fp-b"]
    assert [len(points) for points in h.series.values()] == [1, 1]
    assert "The runs use 2 different backbones (tiny fp-a, tiny fp-b)" in history_markdown(h)
    one = history([runs / "a"], "psnr")
    assert list(one.series) == ["sdedit"] and "different backbones" not in history_markdown(one)
    assert np.isfinite(json.loads(json.dumps(h.series["sdedit on tiny fp-a"][0][1].mean)))
