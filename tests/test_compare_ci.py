"""compare as a CI gate (issue 28): noise-level tolerances, timing only on enough cells, stable
listings, plain statements of what changed, and machine-readable output."""

import json
import xml.etree.ElementTree as ET

from click.testing import CliRunner

from bench.reporting.compare import OK, REGRESSED, CompareOptions, compare_runs, comparison_markdown, load_thresholds
from bench.reporting.tolerances import DEFAULT_THRESHOLDS, MIN_TIMING_PAIRS
from run_bench import main
from tests.test_aggregate import cell, make_run


def levels(psnr, n=12, setting=None, time_s=1.0):
    """``n`` sdedit cells whose PSNR is ``psnr`` plus a per-sample spread (same spread in every run)."""
    setting = setting or {"t0": 0.5}
    return [cell("sdedit", setting, f"img{i}", {"psnr": psnr + 0.5 * i, "ssim": 0.5}, time_s=time_s) for i in range(n)]


def test_a_noise_level_change_passes_by_default_and_fails_with_zero_thresholds(tmp_path):
    """bf16 vs fp32: PSNR lower by 0.014 dB on every cell (so the paired test sees it)."""
    base = make_run(tmp_path, "fp32", levels(20.0))
    new = make_run(tmp_path, "bf16", levels(19.986))
    result = compare_runs(base, new)
    assert result.exit_code == OK
    assert {c.verdict for c in result.changes if c.metric == "psnr"} == {"within threshold"}
    assert "Thresholds (a worsening this small is noise): psnr 0.1, ssim 0.002." in comparison_markdown(result)
    strict = tmp_path / "exact.yaml"
    strict.write_text("default: 0\n")
    assert compare_runs(base, new, load_thresholds(strict)).exit_code == REGRESSED
    # a real regression is still caught with the defaults
    assert compare_runs(base, make_run(tmp_path, "worse", levels(19.0))).exit_code == REGRESSED


def test_compare_help_states_every_default_threshold():
    text = " ".join(CliRunner().invoke(main, ["compare", "-h"]).output.split())
    for metric in DEFAULT_THRESHOLDS:
        assert metric in text
    assert "psnr, psnr_bg, psnr_bg_masked" in text and f"{MIN_TIMING_PAIRS} or more shared ok cells" in text


def test_timing_is_judged_only_on_enough_cells(tmp_path):
    few = compare_runs(make_run(tmp_path, "a", levels(20.0, n=3)), make_run(tmp_path, "b", levels(20.0, n=3, time_s=3.0)))
    assert few.warnings == []
    assert any(f"time per cell not judged for 1 setting(s) with under {MIN_TIMING_PAIRS}" in n for n in few.notes)
    many = compare_runs(make_run(tmp_path, "c", levels(20.0)), make_run(tmp_path, "d", levels(20.0, time_s=3.0)))
    assert len(many.warnings) == 1 and "paired test over 12 cells" in many.warnings[0]


def test_timing_noise_is_not_a_slow_down(tmp_path):
    """7 cells 30% slower, 5 cells 42% faster: the median is 30% up, the mean is unchanged and the
    paired test says noise."""
    base_cells = levels(20.0, n=12)
    new_cells = [dict(c, cost={"time_s": 1.3 if i < 7 else 0.58}) for i, c in enumerate(levels(20.0, n=12))]
    result = compare_runs(make_run(tmp_path, "a", base_cells), make_run(tmp_path, "b", new_cells))
    assert result.warnings == []


def test_comparing_a_run_with_itself_says_so(tmp_path):
    run = make_run(tmp_path, "a", levels(20.0))
    assert "same run folder" in compare_runs(run, run).notes[0]
    assert not any("same run folder" in n for n in compare_runs(run, make_run(tmp_path, "b", levels(20.0))).notes)


def test_a_fingerprint_changed_by_dtype_and_a_changed_device_are_named(tmp_path):
    base, new = make_run(tmp_path, "a", levels(20.0)), make_run(tmp_path, "b", levels(20.0))
    for run, dtype, device in ((base, "fp32", "cpu"), (new, "bf16", "cuda:0")):
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["backbone"].update(device=device, fingerprint={"id": f"fp-{dtype}", "dtype": dtype, "source": "tiny"})
        (run / "manifest.json").write_text(json.dumps(manifest))
    notes = compare_runs(base, new).notes
    assert "backbone fingerprint changed: fp-fp32 → fp-bf16 (dtype fp32 → bf16)" in notes
    assert any(n.startswith("backbone device changed: cpu → cuda:0") for n in notes)


def test_only_in_base_and_new_are_sorted(tmp_path):
    values = [0.9, 0.2, 0.7, 0.4, 0.85, 0.15, 0.6, 0.35]
    base = make_run(tmp_path, "a", levels(20.0, n=2) + [c for t in values for c in levels(20.0, n=2, setting={"t0": t})])
    new = make_run(tmp_path, "b", levels(20.0, n=2) + [c for t in values for c in levels(20.0, n=2, setting={"t0": t + 0.01})])
    result = compare_runs(base, new, options=CompareOptions(allow_missing=True))
    assert len(result.only_base) == len(values) == len(result.only_new)
    assert result.only_base == sorted(result.only_base) and result.only_new == sorted(result.only_new)


def test_json_and_junit_outputs_for_ci(tmp_path):
    base = make_run(tmp_path, "a", levels(20.0) + levels(20.0, setting={"t0": 0.7}))
    new = make_run(tmp_path, "b", levels(20.0) + levels(18.0, setting={"t0": 0.7}))
    out = tmp_path / "ci" / "out"
    result = CliRunner().invoke(main, ["compare", str(base), str(new), "--json", str(out / "c.json"), "--junit", str(out / "c.xml")])
    assert result.exit_code == REGRESSED, result.output
    data = json.loads((out / "c.json").read_text())
    assert data["exit_code"] == REGRESSED and len(data["regressions"]) == 1
    assert {(c["setting"], c["metric"], c["verdict"]) for c in data["changes"]} >= {("t0=0.7", "psnr", "regressed")}
    suite = ET.parse(out / "c.xml").getroot()
    cases = suite.findall("testcase")
    assert len(cases) == len(data["changes"]) == 4  # 2 settings x (psnr, ssim)
    failed = [(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None]
    assert failed == [("sdedit t0=0.7", "psnr")] and suite.get("failures") == "1" and suite.get("tests") == "4"
    other = make_run(tmp_path, "c", [cell("ilvr", {}, "img0", {"psnr": 1.0})])
    broken = CliRunner().invoke(main, ["compare", str(base), str(other), "--json", str(out / "x.json"), "--junit", str(out / "x.xml")])
    assert broken.exit_code == 2 and json.loads((out / "x.json").read_text())["exit_code"] == 2
    assert ET.parse(out / "x.xml").getroot().get("errors") == "1"


def test_progress_is_plain_periodic_lines_when_stderr_is_not_a_terminal():
    import io

    from bench.execution.progress import PlainProgress, progress_bar

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    stream, clock = io.StringIO(), Clock()
    bar = PlainProgress(10, initial=2, unit="cell", stream=stream, interval=30.0, clock=clock)
    for _ in range(5):
        clock.now += 10
        bar.update(1)
        bar.set_postfix(failed=1, refresh=False)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == ["5/10 cells (50%), 30 s elapsed, failed 1", "7/10 cells (70%), 50 s elapsed, failed 1"]
    assert isinstance(progress_bar(3, stream=io.StringIO()), PlainProgress)  # a StringIO is no terminal
    assert not isinstance(progress_bar(3, enabled=False), PlainProgress)
