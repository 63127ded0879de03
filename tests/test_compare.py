"""Run-vs-run comparison: direction-aware verdicts, thresholds, CI overlap, exit codes."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from bench.errors import ConfigError
from bench.reporting.aggregate import Stat
from bench.reporting.compare import (
    INCOMPARABLE,
    OK,
    REGRESSED,
    CompareOptions,
    Threshold,
    compare_runs,
    comparison_markdown,
    judge,
    load_thresholds,
)
from run_bench import main
from tests.helpers import write_dataset
from tests.test_aggregate import cell, fake_metrics, make_run, sweep_cells  # noqa: F401  (fixture)


def stat(mean, half=0.1, n=10):
    return Stat(mean, mean - half, mean + half, n)


# -- verdicts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("higher, base, new, verdict", [
    (True, 10.0, 9.0, "regressed"), (True, 10.0, 11.0, "improved"),
    (False, 0.2, 0.3, "regressed"), (False, 0.3, 0.2, "improved"),
    (None, 1.0, 2.0, "no direction"), (True, 10.0, 10.0, "unchanged"),
])  # fmt: skip
def test_verdict_follows_the_metrics_direction(higher, base, new, verdict):
    assert judge(stat(base, 0.01), stat(new, 0.01), higher, allowed=0.0) == verdict


def test_threshold_and_ci_overlap_both_excuse_a_worse_mean():
    assert judge(stat(10.0, 0.1), stat(9.5, 0.1), True, allowed=1.0) == "within threshold"
    assert judge(stat(10.0, 1.0), stat(9.5, 1.0), True, allowed=0.0) == "within CI"
    assert judge(stat(10.0, 0.1), stat(9.5, 0.1), True, allowed=0.0) == "regressed"
    no_ci = Stat(10.0, n=1)  # one image or a set-level metric: the threshold alone decides
    assert judge(no_ci, Stat(9.5, n=1), True, allowed=0.0) == "regressed"
    assert judge(no_ci, Stat(9.5, n=1), True, allowed=0.6) == "within threshold"


def test_losing_every_value_is_a_regression():
    assert judge(stat(10.0), Stat(math.nan, n_nan=10), True, 0.0) == "regressed"
    assert judge(Stat(math.nan), Stat(math.nan), True, 0.0) == "no value"


def test_thresholds_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("default: 0.01\npsnr: 0.5\nssim: 5%\nlpips: {abs: 0.01, rel: 0.1}\n")
    t = load_thresholds(path)
    assert t["psnr"] == Threshold(abs=0.5) and t["default"] == Threshold(abs=0.01)
    assert t["ssim"].allowed(0.8) == pytest.approx(0.04) and t["lpips"].allowed(0.5) == pytest.approx(0.05)
    path.write_text("psnr: lots\n")
    with pytest.raises(ConfigError, match="thresholds .*'psnr'.*expected a number"):
        load_thresholds(path)
    path.write_text("psnr: -1\n")
    with pytest.raises(ConfigError, match="must not be negative"):
        load_thresholds(path)
    path.write_text("psnrr: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'psnrr' \(did you mean 'psnr'\?\); allowed: "):
        load_thresholds(path)


# -- runs ---------------------------------------------------------------------------------------------
def test_identical_runs_pass_and_a_degraded_setting_is_named(tmp_path):
    base = make_run(tmp_path, "base", sweep_cells({0.3: 20.0, 0.7: 15.0}))
    same = make_run(tmp_path, "same", sweep_cells({0.3: 20.0, 0.7: 15.0}))
    worse = make_run(tmp_path, "worse", sweep_cells({0.3: 20.0, 0.7: 13.0}))
    assert compare_runs(base, same).exit_code == OK
    result = compare_runs(base, worse)
    assert result.exit_code == REGRESSED
    assert len(result.regressions) == 1 and result.regressions[0].startswith("sdedit t0=0.7: psnr 15")
    text = comparison_markdown(result)
    assert "1 regression(s)" in text and "untrained backbone" in text
    assert compare_runs(worse, base).exit_code == OK  # the other way round it improved
    assert "improvement" in comparison_markdown(compare_runs(worse, base))


def test_lower_is_better_metrics_regress_upwards(tmp_path, fake_metrics):
    def cells(level):
        return [cell("sdedit", {"t0": 0.5}, f"img{i}", {"lowfake": level + 0.01 * i}) for i in range(3)]

    base = make_run(tmp_path, "base", cells(0.2), metrics=("lowfake",))
    assert compare_runs(base, make_run(tmp_path, "up", cells(0.4), metrics=("lowfake",))).exit_code == REGRESSED
    assert compare_runs(base, make_run(tmp_path, "down", cells(0.1), metrics=("lowfake",))).exit_code == OK


def test_more_failures_is_a_regression(tmp_path):
    good = [cell("sdedit", {"t0": 0.5}, f"img{i}", {"psnr": 10.0}) for i in range(3)]
    bad = good[:2] + [cell("sdedit", {"t0": 0.5}, "img2", status="failed")]
    result = compare_runs(make_run(tmp_path, "a", good), make_run(tmp_path, "b", bad))
    assert result.exit_code == REGRESSED and "failed cells 0 → 1" in result.regressions[-1]


def test_differences_are_stated_up_front_and_one_sided_items_listed(tmp_path):
    base = make_run(tmp_path, "a", sweep_cells({0.3: 20.0, 0.5: 18.0}), fingerprint="fp-a")
    new = make_run(tmp_path, "b", sweep_cells({0.3: 20.0, 0.7: 15.0}), fingerprint="fp-b")
    result = compare_runs(base, new, options=CompareOptions(allow_missing=True))
    assert result.exit_code == OK
    assert any("backbone fingerprint changed: fp-a → fp-b" in n for n in result.notes)
    assert result.only_base == ["sdedit t0=0.5"] and result.only_new == ["sdedit t0=0.7"]
    text = comparison_markdown(result)
    assert text.index("fingerprint changed") < text.index("No regressions")


def test_a_setting_missing_in_the_new_run_fails_unless_allowed(tmp_path):
    base = make_run(tmp_path, "a", sweep_cells({0.3: 20.0, 0.5: 18.0}))
    new = make_run(tmp_path, "b", sweep_cells({0.3: 20.0}))
    result = compare_runs(base, new)
    assert result.exit_code == REGRESSED and result.regressions == ["sdedit t0=0.5: in base, missing in new"]
    assert compare_runs(base, new, options=CompareOptions(allow_missing=True)).exit_code == OK
    assert compare_runs(new, base).exit_code == OK  # a setting only the new run has is reported, not a failure


def test_different_sample_sets_are_not_comparable_unless_allowed(tmp_path):
    base = make_run(tmp_path, "a", sweep_cells({0.3: 20.0}))
    other = make_run(tmp_path, "b", sweep_cells({0.3: 20.0}), dataset=write_dataset(tmp_path / "other", n=3))
    with pytest.raises(ConfigError, match=r"not comparable: dataset differs: .*other.*--allow-different-samples"):
        compare_runs(base, other)
    result = CliRunner().invoke(main, ["compare", str(base), str(other)])
    assert result.exit_code == INCOMPARABLE and "dataset differs" in result.output
    allowed = CliRunner().invoke(main, ["compare", str(base), str(other), "--allow-different-samples"])
    assert allowed.exit_code == OK and "allowed by --allow-different-samples" in allowed.output


def test_an_interrupted_run_is_compared_paired_on_the_cells_it_has(tmp_path):
    """The new run lacks img2, whose psnr was far below the rest: on all cells its mean would
    look 'better'; on the shared cells it is worse on every one, which the paired test sees."""
    base_cells = [cell("sdedit", {"t0": 0.3}, f"img{i}", {"psnr": p}) for i, p in enumerate((20.0, 30.0, 0.0))]
    new_cells = [cell("sdedit", {"t0": 0.3}, f"img{i}", {"psnr": p}) for i, p in enumerate((19.5, 29.4))]
    result = compare_runs(make_run(tmp_path, "a", base_cells), make_run(tmp_path, "b", new_cells))
    (change,) = [c for c in result.changes if c.metric == "psnr"]
    assert change.base.n == change.new.n == 2 and change.verdict == "regressed"
    assert any("new run incomplete: 2 of 3 cells" in n for n in result.notes)


def test_nfe_and_time_per_cell_warn_or_gate(tmp_path):
    def cells(nfe, time_s, n=12):
        return [cell("sdedit", {"t0": 0.3}, f"img{i}", {"psnr": 20.0}, nfe=nfe, time_s=time_s) for i in range(n)]

    base = make_run(tmp_path, "a", cells(4, 1.0))
    new = make_run(tmp_path, "b", cells(8, 2.0))
    result = compare_runs(base, new)
    assert result.exit_code == OK
    assert result.warnings == ["sdedit: NFE per cell 4 → 8", "sdedit: median time per cell 1 s → 2 s "
                               "(more than 25% slower; paired test over 12 cells)"]  # fmt: skip
    assert "2 cost warning(s)" in comparison_markdown(result)
    assert compare_runs(base, new, options=CompareOptions(time_tolerance=1.5)).warnings == ["sdedit: NFE per cell 4 → 8"]
    gated = compare_runs(base, new, options=CompareOptions(gate_nfe=True, gate_time=True))
    assert gated.exit_code == REGRESSED and len(gated.regressions) == 2
    cli = CliRunner().invoke(main, ["compare", str(base), str(new), "--gate-nfe"])
    assert cli.exit_code == REGRESSED and "NFE per cell 4 → 8" in cli.output


def test_runs_with_nothing_in_common_cannot_be_compared(tmp_path):
    a = make_run(tmp_path, "a", [cell("sdedit", {"t0": 0.5}, "img0", {"psnr": 1.0})])
    b = make_run(tmp_path, "b", [cell("reconstruct", {}, "img0", {"psnr": 1.0})])
    with pytest.raises(ConfigError, match="nothing to compare"):
        compare_runs(a, b)


def test_cli_exit_codes(tmp_path):
    base = make_run(tmp_path, "base", sweep_cells({0.3: 20.0, 0.7: 15.0}))
    worse = make_run(tmp_path, "worse", sweep_cells({0.3: 20.0, 0.7: 13.0}))
    other = make_run(tmp_path, "other", [cell("ilvr", {}, "img0", {"psnr": 1.0})])

    def run(*args):
        return CliRunner().invoke(main, ["compare", *map(str, args)])

    assert run(base, base).exit_code == OK
    regressed = run(base, worse, "--md", tmp_path / "cmp.md")
    assert regressed.exit_code == REGRESSED and "sdedit t0=0.7: psnr" in regressed.output
    assert (tmp_path / "cmp.md").read_text().startswith("# editbench compare")
    assert run(base, other).exit_code == INCOMPARABLE
    assert run(base, tmp_path / "nowhere").exit_code == INCOMPARABLE
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("psnr: 3\n")
    assert run(base, worse, "--thresholds", thresholds).exit_code == OK


def test_a_degraded_method_in_a_real_run_is_caught(tmp_path, backbone, monkeypatch):
    """Two runs of one config on the tiny backbone; in the second, sdedit is broken to
    return a white image. compare exits 1 naming sdedit only; the same run twice exits 0."""
    from bench.execution.config import build_config
    from bench.execution.runner import Runner
    from bench.registry import get_method
    from tests.helpers import write_dataset

    raw = {"dataset": {"name": None, "path": write_dataset(tmp_path / "data", n=3)},
           "methods": {"reconstruct": {}, "sdedit": {"t0": 0.5, "steps": 2}}}  # fmt: skip

    def run(name):
        run_dir = tmp_path / name
        run_dir.mkdir()
        runner = Runner(build_config(raw), run_dir, backbone=backbone, progress=False)
        runner.write_manifest()
        runner.run()
        return run_dir

    base = run("base")
    sdedit = get_method("sdedit")
    original = sdedit.edit_batch

    def white(self, *args, **kwargs):
        results = original(self, *args, **kwargs)
        for result in results:
            result.image = torch.ones_like(result.image)
        return results

    monkeypatch.setattr(sdedit, "edit_batch", white)
    broken = run("broken")
    result = CliRunner().invoke(main, ["compare", str(base), str(broken)])
    assert result.exit_code == REGRESSED, result.output
    regressions = compare_runs(base, broken).regressions
    assert regressions and all(r.startswith("sdedit: ") for r in regressions)
    assert f"- {regressions[0].split(' (')[0]}" in result.output
    assert CliRunner().invoke(main, ["compare", str(base), str(base)]).exit_code == OK


def test_version_drift_of_metric_packages_warns_but_does_not_fail(tmp_path):
    def run_with(name, packages):
        run_dir = make_run(tmp_path, name, sweep_cells({0.3: 20.0}))
        manifest = json.loads((run_dir / "manifest.json").read_text())
        (run_dir / "manifest.json").write_text(json.dumps({**manifest, "packages": packages}))
        return run_dir

    base = run_with("base", {"torch": "2.3.0", "torchmetrics": "1.4.1", "lpips": "0.1.4", "numpy": "1.26"})
    new = run_with("new", {"torch": "2.4.0", "torchmetrics": "1.4.2", "lpips": "0.1.4", "numpy": "2.0",
                           "clean-fid": "0.1.35"})  # fmt: skip
    result = compare_runs(base, new)
    assert result.exit_code == OK
    assert len(result.warnings) == 1 and "torch 2.3.0 → 2.4.0, torchmetrics 1.4.1 → 1.4.2." in result.warnings[0]
    assert "lpips" not in result.warnings[0] and "clean-fid" not in result.warnings[0], "same or recorded once"
    assert "package versions changed: clean-fid None → 0.1.35, numpy 1.26 → 2.0" in result.notes
    assert "> **Warning:** package versions differ: torch" in comparison_markdown(result)
    cli = CliRunner().invoke(main, ["compare", str(base), str(new)])
    assert cli.exit_code == OK and "Warning: package versions differ: torch 2.3.0 → 2.4.0" in cli.stderr
    assert compare_runs(base, base).warnings == []
