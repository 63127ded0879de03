"""One command that validates editbench on a GPU: the test suite's CUDA subset, then speed and memory
figures against their goals, within a time budget; everything under ``--out``.

    python benchmarks/gpu_suite.py --out OUT --budget 540      # on the GPU machine (benchmarks/gpu_suite.sh)
    python benchmarks/gpu_suite.py --out /tmp/s --device cpu   # the tiny backbones, a few steps (a smoke run)

Stages run in this order, the most valuable first, so a run cut short still says something; each
starts only if the budget left covers its estimated need, and is stopped when the budget runs out
(``benchmarks/gpu_stages.py`` holds what each measures):

1. ``tests_fp32``, ``tests_fp16``: the tests marked ``backbone`` (``tests/conftest.py``) with the tiny
   backbones on the device (``$EDITBENCH_TEST_DEVICE``) in fp32, then fp16; every failure with its cause;
2. ``sdedit``: ``sdedit`` against bare diffusers' ``StableDiffusionImg2ImgPipeline`` (SD 1.5 at 512 px,
   50 steps, fp16, interleaved): the time ratio, and the edit's own time;
3. ``null_text_p2p``: null-text inversion of one image at the reference settings, then ``p2p`` over the
   cached inversion: times and peak memory;
4. ``throughput``: ``sdedit`` cells/s at batch 1, 4, 8, 16;
5. ``sdxl``, ``sd3``, ``flux``: one edit per method of the family at 1024 px in bf16 (FLUX only where
   the FLUX family exists).

Networks are the real architectures with seeded random weights (``benchmarks/memory.py``,
``benchmarks/random_backbones.py``), built into ``--models`` (default: the temp folder; not under
``--out``, which holds results only). On a device other than CUDA, or with ``--quick``, the tiny
backbones stand in at a few steps: figures of the plumbing, not of editbench's speed. Results:
``OUT/results.json`` (rewritten after every stage), ``OUT/summary.md`` (printed at the end), the
tests' logs and JUnit XML, and a torch profiler table ``OUT/profile_<stage>.txt`` where a goal is
missed. Fill ``benchmarks/RESULTS.md`` from the summary.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- the record ------------------------------------------------------------------------------------------
def environment(device: str) -> dict:
    """Device, driver, versions, date and the command, for the results' header."""
    import diffusers
    import torch
    import transformers

    env = dict(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), command=" ".join(sys.argv),
               python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
               diffusers=diffusers.__version__, transformers=transformers.__version__, device=device)  # fmt: skip
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            env["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    try:
        head = ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]
        env["commit"] = subprocess.run(head, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


def _value(v) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_markdown(results: dict) -> str:
    """The Markdown summary of ``results`` (environment, stages, goals, test failures, figures)."""
    env = results["environment"]
    lines = ["# editbench GPU suite", "", f"- mode: {results['mode']} (budget {results['budget_s']:.0f} s)"]
    lines += [f"- {key}: {env[key]}" for key in env]
    lines += ["", "| stage | status | s | note |", "|---|---|---|---|"]
    lines += [f"| {e['stage']} | {e['status']} | {e['seconds']:.0f} | {e['note']} |" for e in results["stages"]]
    goals = [g for e in results["stages"] for g in e["figures"].get("goals", [])]
    if goals:
        lines += ["", "| goal | value | limit | met |", "|---|---|---|---|"]
        for g in goals:
            met = {True: "yes", False: "NO", None: "unmeasured"}[g["met"]]
            lines.append(f"| {g['goal']} | {_value(g['value'])} {g['unit']} | {'<=' if g['at_most'] else '>='} "
                         f"{g['limit']} {g['unit']} | {met} |")  # fmt: skip
    for e in results["stages"]:
        failures = e["figures"].get("failures", [])
        if failures:
            lines += ["", f"## {e['stage']}: {len(failures)} failures", ""]
            lines += [f"- `{f['test']}`: {f['cause']}" for f in failures]
    lines += ["", "## figures", ""]
    for e in results["stages"]:
        shown = {k: v for k, v in e["figures"].items() if k not in ("goals", "failures")}
        if shown:
            lines.append(f"- {e['stage']}: `{json.dumps(shown, default=str)}`")
    return "\n".join(lines) + "\n"


# -- the command -----------------------------------------------------------------------------------------
@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="folder for every result")
@click.option("--budget", default=540.0, show_default=True, help="seconds the whole suite may take")
@click.option("--device", default="auto", show_default=True, help="auto: cuda if available, else cpu")
@click.option("--quick", is_flag=True, help="tiny backbones and a few steps (the default off CUDA)")
@click.option("--only", default=None, help="comma-separated stage names to run (default: all, in order)")
@click.option("--tests", default="-m 'backbone and not slow' tests", show_default=True,
              help="pytest arguments selecting the CUDA subset")
@click.option("--models", type=click.Path(path_type=Path), default=None,
              help="folder for the random full-size pipelines  [default: the temp folder]")
def main(out, budget, device, quick, only, tests, models):
    import torch

    from benchmarks.gpu_stages import STAGES, Suite
    from benchmarks.suite_budget import Budget, run_stages

    budget = Budget(budget)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    mode = "quick" if quick or not device.startswith("cuda") else "full"
    out.mkdir(parents=True, exist_ok=True)
    models = models or Path(tempfile.gettempdir()) / "editbench-gpu-suite"
    models.mkdir(parents=True, exist_ok=True)
    os.environ["EDITBENCH_CACHE"] = tempfile.mkdtemp(prefix="cache-", dir=models)  # empty: inversions are computed
    stages = [s for s in STAGES if only is None or s.name in only.split(",")]
    results = dict(mode=mode, budget_s=budget.total, environment=environment(device), stages=[])

    def record(entry: dict) -> None:
        results["stages"].append(entry)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        click.echo(f"[{entry['stage']}] {entry['status']} in {entry['seconds']:.0f} s {entry['note']}", err=True)

    suite = Suite(out=out, device=device, mode=mode, models=models, tests=tests, budget=budget)
    try:
        run_stages(stages, suite, budget, mode, record)
    finally:
        shutil.rmtree(os.environ["EDITBENCH_CACHE"], ignore_errors=True)
    text = summary_markdown(results)
    (out / "summary.md").write_text(text)
    click.echo(text)


if __name__ == "__main__":
    main()
