"""The "best setting" view (``editbench report RUN --rank METRIC``): each method's settings in
the metric's order, with CI, n and which differences the paired test tells apart."""

from click.testing import CliRunner

from bench.reporting.aggregate import load_run, rank_settings, summarize
from run_bench import main
from tests.test_aggregate import cell, make_run

SAMPLES = ("img0", "img1", "img2", "img3")


def _run(tmp_path):
    noise = (1.0, -1.0, 0.5, -0.4)  # t0=0.5 differs from t0=0.3 by these: the paired interval holds 0
    cells = [cell("reconstruct", {}, s, {"psnr": 30.0, "mse": 0.001}) for s in SAMPLES]
    for t0, level in ((0.3, 20.0), (0.5, 20.0), (0.7, 15.0)):
        for i, s in enumerate(SAMPLES):
            psnr = level + (noise[i] if t0 == 0.5 else 0.0) + i / 10
            cells.append(cell("sdedit", {"t0": t0, "w": 7.5}, s, {"psnr": psnr, "mse": 1 / psnr}))
    cells += [cell("ilvr", {"N": 4}, s, {"psnr": 18.0 + i, "mse": 0.05}) for i, s in enumerate(SAMPLES)]
    return make_run(tmp_path, "r", cells, metrics=("psnr", "mse"))


def test_settings_are_ordered_in_the_metrics_direction_with_paired_verdicts(tmp_path):
    rows = summarize(load_run(_run(tmp_path)))
    ranked = rank_settings(rows, "psnr")
    assert list(ranked) == ["sdedit", "ilvr"]  # the reference is a ceiling, not ranked
    sdedit = ranked["sdedit"]
    assert [r.row.label for r in sdedit] == ["t0=0.5", "t0=0.3", "t0=0.7"]  # means 20.18, 20.15, 15.15
    assert [r.above_next for r in sdedit] == [False, True, None]  # 0.5 vs 0.3: indistinguishable; 0.3 vs 0.7: yes
    assert [r.below_best for r in sdedit] == [None, False, True]
    by_mse = rank_settings(rows, "mse")["sdedit"]  # lower is better: the same order, from the other end
    assert [r.row.label for r in by_mse][-1] == "t0=0.7"


def test_report_rank_prints_the_view_and_names_a_wrong_metric(tmp_path):
    run_dir = _run(tmp_path)
    result = CliRunner().invoke(main, ["report", str(run_dir), "--rank", "psnr"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("# Settings ranked by psnr ↑") and "Reference (reconstruct): 30 [30, 30]." in text
    assert "## sdedit\n\nno setting is distinguishable from all the others." in text
    assert "| rank | setting | psnr | n | vs next | best vs this |" in text
    assert "| 1 | t0=0.5 | 20.18 [" in text and "| 4 | no | n/a |" in text and "| 3 | t0=0.7 | 15.15 [" in text
    assert "## ilvr\n\none setting." in text
    assert "untrained backbone" in text  # smoke numbers say so
    wrong = CliRunner().invoke(main, ["report", str(run_dir), "--rank", "lpips"])
    assert wrong.exit_code == 1 and "--rank 'lpips': the run has no such metric; it has psnr, mse" in wrong.output
