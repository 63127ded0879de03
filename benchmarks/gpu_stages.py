"""What each stage of the GPU suite (``benchmarks/gpu_suite.py``) measures, in its order.

Times come from ``bench.timing.CellTimer`` (CUDA events around the work, synchronised; wall seconds
off CUDA), peak memory from its ``torch.cuda.max_memory_allocated`` (reset at the start of the work,
so it counts the weights too). Every figure is the median of its repetitions (one warm-up call
first); repetitions stop early when the budget would not cover another one.
"""

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.timing import CellTimer
from benchmarks.suite_budget import Budget, Skip, Stage, goal, median_row

#: Settings by mode: ``full`` the issue's (GPU), ``quick`` the tiny backbones' smoke run.
SETTINGS = {
    "full": dict(steps=50, reps=5, images=2, inner_steps=None, sizes=(1, 4, 8, 16), size=1024),
    "quick": dict(steps=3, reps=2, images=1, inner_steps=2, sizes=(1, 2), size=None),
}
#: The share of the whole budget each tests pass may take at most.
TEST_SHARE = {"fp32": 0.25, "fp16": 0.15}
TINY_NAMES = {"sd": "tiny", "sdxl": "tiny-sdxl", "sd3": "tiny-sd3", "flux": "tiny-flux"}
#: The methods timed per family at 1024 px, where the method declares the family.
FAMILY_METHODS = ("sdedit", "flowedit", "fireflow")
GOAL_OVERHEAD, GOAL_SDEDIT_S, GOAL_NULL_TEXT_S, GOAL_PEAK_GIB, GOAL_BATCH8 = 1.05, 0.5, 10.0, 16.0, 3.0


@dataclass
class Suite:
    """The suite's state across stages: where results go, the device and mode, the shared SD 1.5 backbone."""

    out: Path
    device: str
    mode: str
    models: Path
    tests: str
    budget: Budget
    partial: dict = field(default_factory=dict)  # a stage's figures so far, kept if the budget cuts it off
    _sd15: object = None

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def settings(self) -> dict:
        return SETTINGS[self.mode]

    def sd15(self):
        """SD 1.5 at 512 px with random weights (fp16 on CUDA), or the tiny backbone in quick mode; loaded once."""
        if self._sd15 is None:
            from bench.diffusion.backbone import Backbone, BackboneSpec
            from benchmarks.memory import build_random_sd15

            name = TINY_NAMES["sd"]
            if self.mode == "full":
                folder = self.models / "sd15-random"
                if not (folder / "model_index.json").is_file():
                    with torch.device(self.device):  # random initialisation on the GPU: seconds, not minutes
                        build_random_sd15(folder)
                name = str(folder)
            self._sd15 = Backbone(BackboneSpec(name=name, device=self.device, dtype="fp16" if self.cuda else "fp32"))
        return self._sd15

    def seconds(self, work) -> tuple[float, float | None]:
        """Seconds (GPU time on CUDA) and peak MiB (CUDA only) of one call of ``work``."""
        with CellTimer(self.device) as timer:
            work()
        return elapsed(timer)

    def repeat(self, work, key: str) -> list[float]:
        """Seconds of up to ``reps`` calls of ``work`` after a warm-up, fewer if the budget runs short;
        kept in ``partial[key]`` as they come."""
        last, _ = self.seconds(work)
        times = self.partial.setdefault(key, [])
        while len(times) < self.settings["reps"] and self.budget.allows(2 * last + 5):
            last, _ = self.seconds(work)
            times.append(last)
        return times or [last]

    def profile(self, name: str, work) -> str:
        """A torch profiler table of one call of ``work`` in ``OUT/profile_<name>.txt``; its file name."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * self.cuda
        with profile(activities=activities) as prof:
            work()
        averages = prof.key_averages()
        table = averages.table(sort_by="device_time_total" if self.cuda else "cpu_time_total", row_limit=30)
        path = self.out / f"profile_{name}.txt"
        path.write_text(table)
        return path.name

    def profile_misses(self, goals: list[dict], work, measured_s: float, name: str) -> dict:
        """Profile ``work`` once where a goal of ``goals`` is missed and the budget allows."""
        if any(g["met"] is False for g in goals) and self.budget.allows(3 * measured_s + 10):
            return {"profile": self.profile(name, work)}
        return {}


def elapsed(timer: CellTimer) -> tuple[float, float | None]:
    """A finished timer's seconds (GPU time on CUDA) and peak MiB (CUDA only)."""
    return (timer.gpu_s if timer.cuda else timer.wall_s), timer.peak_mem_mb


def first_samples(backbone, n: int) -> list:
    from bench.data import DatasetSpec, load_dataset

    return [ref.load(backbone.resolution) for ref in load_dataset(DatasetSpec(name="sample"))[:n]]


# -- 1. the tests' CUDA subset -----------------------------------------------------------------------------
def junit_failures(path: Path) -> dict:
    """Counts and every failure or error (test id, first line of its cause) of a JUnit XML report."""
    counts, failures = dict(tests=0, failed=0, errors=0, skipped=0), []
    if not path.is_file():
        return dict(counts, failures=failures)
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        counts["tests"] += 1
        for kind, key in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            found = case.find(kind)
            if found is not None:
                counts[key] += 1
                if kind != "skipped":
                    cause = (found.get("message") or found.text or "").strip().splitlines() or ["(no message)"]
                    test = f"{case.get('classname')}::{case.get('name')}"
                    failures.append(dict(test=test, kind=kind, cause=cause[0][:300]))
    return dict(counts, failures=failures)


def tests_stage(dtype: str):
    def run(suite: Suite) -> dict:
        from tests.helpers import TEST_DEVICE_VAR, TEST_DTYPE_VAR

        xml, log = suite.out / f"tests_{dtype}.xml", suite.out / f"tests_{dtype}.log"
        limit = min(suite.budget.total * TEST_SHARE[dtype], suite.budget.left() - 5)
        env = {**os.environ, TEST_DEVICE_VAR: suite.device, TEST_DTYPE_VAR: dtype}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=line", "-rfE",
                   "--continue-on-collection-errors", f"--junitxml={xml}", *shlex.split(suite.tests)]  # fmt: skip
        with log.open("w") as out:
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            interrupted = False
            try:
                child.wait(timeout=limit)
            except subprocess.TimeoutExpired:  # pytest still writes its report after an interrupt
                interrupted = True
                os.killpg(child.pid, signal.SIGINT)
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
            finally:
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
        found = junit_failures(xml)
        found.update(dtype=dtype, exit_status=child.returncode, log=log.name, limit_s=round(limit))
        if interrupted:
            found["note"] = f"stopped after {limit:.0f} s (its share of the budget): the counts cover the tests run"
        return found

    return run


# -- 2. sdedit against bare diffusers ----------------------------------------------------------------------
def sdedit_stage(suite: Suite) -> dict:
    from diffusers import StableDiffusionImg2ImgPipeline

    from bench.registry import get_method
    from tests.helpers import diffusers_pipeline

    backbone = suite.sd15()
    method = get_method("sdedit")()
    setting = method.resolve({"steps": suite.settings["steps"]})
    sample = first_samples(backbone, 1)[0]
    pipe = diffusers_pipeline(StableDiffusionImg2ImgPipeline, backbone, setting["steps"])

    def ours():
        method.edit(backbone, sample, None, setting, torch.Generator().manual_seed(0))

    def bare():  # the same work: encode the source, the same steps under CFG, decode
        pipe(sample.target_prompt, image=sample.image[None], strength=setting["t0"],
             num_inference_steps=setting["steps"], guidance_scale=setting["w"],
             generator=torch.Generator().manual_seed(0), output_type="pt")  # fmt: skip

    ours(), bare()  # warm-up
    pairs = suite.partial.setdefault("pairs", [])
    while len(pairs) < suite.settings["reps"] and (not pairs or suite.budget.allows(3 * sum(pairs[-1]) + 5)):
        pairs.append((suite.seconds(ours)[0], suite.seconds(bare)[0]))  # interleaved
    ratio = median_row([a / b for a, b in pairs])
    edit = median_row([a for a, _ in pairs])
    goals = [goal("sdedit / diffusers img2img (median)", ratio["median"], GOAL_OVERHEAD),
             goal(f"sdedit {setting['steps']}-step edit, t0={setting['t0']} (H100)", edit["median"], GOAL_SDEDIT_S,
                  unit="s")]  # fmt: skip
    figures = dict(setting=setting, ratio=ratio, sdedit_s=edit, diffusers_s=median_row([b for _, b in pairs]))
    return dict(figures, goals=goals, **suite.profile_misses(goals, ours, edit["median"], "sdedit"))


# -- 3. null-text inversion, then p2p over it ----------------------------------------------------------------
def null_text_p2p_stage(suite: Suite) -> dict:
    from bench.registry import get_method

    backbone = suite.sd15()
    method = get_method("p2p")()
    given = {"inversion": "null_text", "steps": suite.settings["steps"]}
    if suite.settings["inner_steps"]:
        given["inner_steps"] = suite.settings["inner_steps"]
    setting = method.resolve(given)
    *samples, spare = first_samples(backbone, suite.settings["images"] + 1)  # spare: a cache miss to profile
    inversions = suite.partial.setdefault("null_text_s", [])
    peaks = []
    for sample in samples:  # one inversion per image: every repetition must compute, not hit the cache
        if inversions and not suite.budget.allows(2 * inversions[-1] + 10):
            break
        seconds, peak = suite.seconds(lambda: method.prepare(backbone, sample, setting))
        inversions.append(seconds)
        peaks.append(peak)
    sample = samples[0]
    prep = method.prepare(backbone, sample, setting)
    if not prep.cache_hit:
        raise RuntimeError("the null-text inversion was not read back from the cache")

    def edit():
        method.edit(backbone, sample, prep.value, setting, torch.Generator().manual_seed(0))

    edits = suite.repeat(edit, "p2p_s")
    _, edit_peak = suite.seconds(edit)
    peak_gib = None if edit_peak is None else max(edit_peak, *peaks) / 1024
    null_text = median_row(inversions)
    goals = [goal("null-text inversion per image", null_text["median"], GOAL_NULL_TEXT_S, unit="s"),
             goal("peak memory, null-text + p2p", peak_gib, GOAL_PEAK_GIB, unit="GiB")]  # fmt: skip
    figures = dict(setting=setting, null_text_s=null_text, p2p_cached_s=median_row(edits), peak_gib=peak_gib)
    invert_spare = lambda: method.prepare(backbone, spare, setting)  # noqa: E731
    return dict(figures, goals=goals, **suite.profile_misses(goals[:1], invert_spare, null_text["median"], "null_text"))


# -- 4. throughput ---------------------------------------------------------------------------------------------
def throughput_stage(suite: Suite) -> dict:
    from statistics import median

    from benchmarks.batching import throughput

    backbone = suite.sd15()
    sizes = suite.settings["sizes"]
    rows = throughput(backbone, str(backbone.spec.name), suite.device, backbone.spec.dtype, "sdedit", sizes,
                      suite.settings["steps"], max(sizes), 1, suite.settings["reps"], keep=median)  # fmt: skip
    speedup = {row["batch"]: row["speedup"] for row in rows}
    return dict(rows=rows, goals=[goal("cells/s at batch 8 over batch 1", speedup.get(8), GOAL_BATCH8, at_most=False)])


# -- 5. the families at 1024 px ----------------------------------------------------------------------------------
def flux_landed() -> bool:
    return importlib.util.find_spec("bench.diffusion.families.flux") is not None


def family_stage(family: str):
    def run(suite: Suite) -> dict:
        from bench.diffusion.backbone import Backbone, BackboneSpec
        from bench.registry import get_method, method_names
        from benchmarks.random_backbones import build_random

        if family == "flux" and not flux_landed():
            raise Skip("the FLUX family (bench/diffusion/families/flux.py) has not landed")
        name, folder = TINY_NAMES[family], None
        if suite.mode == "full":
            folder = suite.models / f"{family}-random"
            if not (folder / "model_index.json").is_file():
                build_random(family, folder, suite.device, torch.bfloat16)
            name = str(folder)
        try:
            spec = BackboneSpec(name=name, device=suite.device, dtype="bf16", resolution=suite.settings["size"])
            backbone = Backbone(spec)
            sample = first_samples(backbone, 1)[0]
            methods = [m for m in FAMILY_METHODS if m in method_names() and family in get_method(m).families]
            for method_name in methods:
                try:
                    suite.partial[method_name] = family_edit(suite, backbone, sample, get_method(method_name), family)
                except Exception as exc:  # noqa: BLE001 (one method's failure is a finding; the others still run)
                    suite.partial[method_name] = {"error": f"{type(exc).__name__}: {exc}"}
            return {name: suite.partial[name] for name in methods} | dict(size=backbone.resolution, dtype="bf16")
        finally:
            backbone = None
            if suite.cuda:
                torch.cuda.empty_cache()
            if folder is not None:  # tens of GB each: the disk holds one family at a time
                shutil.rmtree(folder, ignore_errors=True)

    return run


def family_edit(suite: Suite, backbone, sample, cls, family: str) -> dict:
    """Preparation and edit seconds and peak GiB of one ``cls`` edit: at its default setting, or in quick
    mode at its conformance case's first setting for ``family`` (a few steps)."""
    given = cls.conformance.setting(0, family) if suite.mode == "quick" else {}
    method, setting = cls(), cls.resolve(given)
    with CellTimer(suite.device) as timer:
        prep = method.prepare(backbone, sample, setting)
    prep_s, prep_peak = elapsed(timer)

    def edit():
        method.edit(backbone, sample, None if prep is None else prep.value, setting, torch.Generator().manual_seed(0))

    edits = suite.repeat(edit, f"{cls.name}_edit_s")
    _, peak = suite.seconds(edit)
    peaks = [p for p in (prep_peak, peak) if p is not None]
    return dict(setting=setting, prepare_s=prep_s, edit_s=median_row(edits),
                peak_gib=max(peaks) / 1024 if peaks else None)  # fmt: skip


STAGES = [
    Stage("tests_fp32", tests_stage("fp32"), {"full": 60, "quick": 5}),
    Stage("tests_fp16", tests_stage("fp16"), {"full": 45, "quick": 5}),
    Stage("sdedit", sdedit_stage, {"full": 90, "quick": 5}),
    Stage("null_text_p2p", null_text_p2p_stage, {"full": 45, "quick": 5}),
    Stage("throughput", throughput_stage, {"full": 60, "quick": 5}),
    Stage("sdxl", family_stage("sdxl"), {"full": 120, "quick": 5}),
    Stage("sd3", family_stage("sd3"), {"full": 180, "quick": 5}),
    Stage("flux", family_stage("flux"), {"full": 300, "quick": 5}),
]
