"""The GPU suite (``benchmarks/gpu_suite.py``, issue 41): its budget and stage logic, its summary, the
failures it reads from pytest's report, and (slow) one end-to-end run on the CPU with the tiny backbones."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu_stages import STAGES, junit_failures
from benchmarks.gpu_suite import summary_markdown
from benchmarks.suite_budget import Budget, Skip, Stage, goal, run_stages

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """A clock that stages move forward by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Suite:
    partial: dict = {}


def test_stages_run_in_order_and_skip_what_the_budget_left_does_not_cover():
    clock, ran = Clock(), []

    def spend(name, seconds):
        def run(suite):
            ran.append(name)
            clock.now += seconds
            return {"spent": seconds}

        return run

    stages = [Stage("a", spend("a", 50), {"full": 30}), Stage("b", spend("b", 10), {"full": 45}),
              Stage("c", spend("c", 5), {"full": 20})]  # fmt: skip
    budget = Budget(100, reserve=10, clock=clock)
    recorded = []
    entries = run_stages(stages, Suite(), budget, "full", recorded.append)
    assert ran == ["a", "c"]  # after a, 40 s are left: b (45) is skipped, c (20) still runs
    assert [e["status"] for e in entries] == ["ok", "skipped", "ok"] and recorded == entries
    assert entries[0]["figures"] == {"spent": 50} and "needs about 45 s, 40 s left" in entries[1]["note"]


def test_a_failing_or_skipping_stage_is_recorded_and_the_next_runs():
    def fail(suite):
        raise RuntimeError("no kernel image")

    def skip(suite):
        raise Skip("the FLUX family has not landed")

    stages = [Stage("fail", fail, {"full": 1}), Stage("skip", skip, {"full": 1}), Stage("ok", lambda s: {}, {"full": 1})]
    entries = run_stages(stages, Suite(), Budget(100, reserve=0), "full", lambda e: None)
    assert [e["status"] for e in entries] == ["error", "skipped", "ok"]
    assert entries[0]["note"] == "RuntimeError: no kernel image" and "no kernel image" in entries[0]["trace"]
    assert entries[1]["note"] == "the FLUX family has not landed"


def test_a_stage_running_past_the_budget_is_cut_off_with_its_partial_figures():
    suite = Suite()

    def slow(s):
        s.partial = {"times": [0.1]}
        time.sleep(5)

    started = time.monotonic()
    entries = run_stages([Stage("slow", slow, {"full": 0})], suite, Budget(0.5, reserve=0), "full", lambda e: None)
    assert time.monotonic() - started < 3
    assert entries[0]["status"] == "cut off" and entries[0]["figures"] == {"times": [0.1]}


def test_the_stages_come_in_the_issues_order_with_the_tests_first():
    names = [s.name for s in STAGES]
    assert names == ["tests_fp32", "tests_fp16", "sdedit", "null_text_p2p", "throughput", "sdxl", "sd3", "flux"]


def test_goals_and_the_summary():
    assert goal("ratio", 1.02, 1.05)["met"] and not goal("speedup", 2.5, 3.0, at_most=False)["met"]
    assert goal("peak", None, 16.0)["met"] is None
    results = dict(mode="quick", budget_s=60, environment={"device": "cpu"}, stages=[
        dict(stage="tests_fp32", status="ok", seconds=3, note="", figures={
            "failures": [{"test": "tests.test_x::test_y", "kind": "failure", "cause": "AssertionError: 0.2 > 0.1"}]}),
        dict(stage="sdedit", status="ok", seconds=2, note="", figures={"goals": [goal("ratio", 1.2, 1.05)]}),
    ])  # fmt: skip
    text = summary_markdown(results)
    assert "| ratio | 1.2  | <= 1.05  | NO |" in text
    assert "- `tests.test_x::test_y`: AssertionError: 0.2 > 0.1" in text and "| tests_fp32 | ok | 3 |  |" in text


def test_junit_failures_lists_each_failure_with_its_cause(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite><testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="assert 1 == 2&#10;more">x</failure></testcase>'
        '<testcase classname="tests.test_b" name="test_err"><error message="CUDA error: out of memory"/></testcase>'
        '<testcase classname="tests.test_b" name="test_skip"><skipped message="no"/></testcase></testsuite></testsuites>'
    )
    found = junit_failures(report)
    assert (found["tests"], found["failed"], found["errors"], found["skipped"]) == (4, 1, 1, 1)
    assert found["failures"] == [
        dict(test="tests.test_a::test_bad", kind="failure", cause="assert 1 == 2"),
        dict(test="tests.test_b::test_err", kind="error", cause="CUDA error: out of memory"),
    ]
    assert junit_failures(tmp_path / "absent.xml")["tests"] == 0


@pytest.mark.slow
def test_the_suite_runs_end_to_end_on_the_cpu_with_the_tiny_backbones(tmp_path):
    out = tmp_path / "out"
    command = ["bash", "benchmarks/gpu_suite.sh", "--out", str(out), "--device", "cpu", "--budget", "400",
               "--models", str(tmp_path / "models"), "--tests", "tests/test_sdedit.py -k nfe"]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    status = {e["stage"]: e["status"] for e in results["stages"]}
    flux = "ok" if (ROOT / "bench/diffusion/families/flux.py").is_file() else "skipped"
    assert status == {"tests_fp32": "ok", "tests_fp16": "ok", "sdedit": "ok", "null_text_p2p": "ok",
                      "throughput": "ok", "sdxl": "ok", "sd3": "ok", "flux": flux}  # fmt: skip
    figures = {e["stage"]: e["figures"] for e in results["stages"]}
    assert figures["tests_fp32"]["tests"] == 1 and figures["tests_fp32"]["failures"] == []
    assert figures["sdedit"]["ratio"]["n"] >= 1 and figures["sdedit"]["ratio"]["median"] > 0
    assert [row["batch"] for row in figures["throughput"]["rows"]] == [1, 2]
    assert {"sdedit", "flowedit", "fireflow"} <= set(figures["sd3"])
    assert (out / "summary.md").read_text() in done.stdout and "# editbench GPU suite" in done.stdout


def test_a_missed_goal_is_profiled_and_a_met_one_is_not(tmp_path):
    import torch

    from benchmarks.gpu_stages import Suite as GpuSuite

    suite = GpuSuite(out=tmp_path, device="cpu", mode="quick", models=tmp_path, tests="", budget=Budget(100))
    work = lambda: torch.ones(64, 64) @ torch.ones(64, 64)  # noqa: E731
    assert suite.profile_misses([goal("fast enough", 0.1, 1.0)], work, 0.01, "met") == {}
    assert suite.profile_misses([goal("fast enough", 2.0, 1.0)], work, 0.01, "missed") == {"profile": "profile_missed.txt"}
    assert "aten::mm" in (tmp_path / "profile_missed.txt").read_text()
