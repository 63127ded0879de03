"""The ray executor: the same cells, PNG bytes and metrics as local; a worker or the driver killed
mid-run still ends with every cell exactly once. (Concurrent cache writers: tests/test_cache.py.)

All tests share one local Ray instance (2 CPUs, module-scoped) and one local reference run.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from bench.execution.config import ExecutorSpec, build_config
from bench.execution.runner import Runner, new_run_dir, resume_run
from bench.paths import repo_root
from bench.store import Store
from tests.helpers import committed, kill_9_after, write_dataset, write_turns_manifest

ray = pytest.importorskip("ray")

#: sdedit first, so the first units dispatched are the slow ones (a kill lands mid-unit).
METHODS = {"sdedit": {"t0": [0.4, 0.8], "steps": 8}, "reconstruct": {}}
BAD_SAMPLE = {"id": "broken", "image": "missing.png", "source_prompt": "a cat", "target_prompt": "a dog"}
RAY = ExecutorSpec("ray", workers=2)


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(repo_root())}})  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def raw_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray")
    data = write_dataset(folder / "data", n=2, extra=[BAD_SAMPLE])
    return {"dataset": {"name": None, "path": data}, "methods": METHODS, "seeds": [0], "output": str(folder / "runs")}


def run(raw, executor=None) -> Path:
    config = build_config(raw)
    run_dir = new_run_dir(config, None)
    runner = Runner(config, run_dir, progress=False, executor=executor)
    runner.write_manifest()
    runner.run()
    runner.store.close()
    return run_dir


def cells(run_dir: Path):
    store = Store(run_dir)
    frame = store.cells_frame().set_index("key").sort_index()
    store.close()
    return frame


@pytest.fixture(scope="module")
def local_run(raw_config):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker runs: the same float reductions
    try:
        return run(raw_config)
    finally:
        torch.set_num_threads(threads)


def assert_same_cells(run_dir: Path, reference: Path, preparations_cached: bool = False):
    """Same cells, PNG bytes and metrics; with ``preparations_cached`` the run read every
    preparation from the disk cache the reference wrote (no preparation NFE)."""
    got, want = cells(run_dir), cells(reference)
    assert got.index.is_unique and list(got.index) == list(want.index)
    columns = ["status", "error", "output_path", "nfe"] + [c for c in want if c.startswith("metric.")]
    if preparations_cached:
        prepared = want.prep_nfe > 0
        assert prepared.any() and (got.prep_nfe[prepared] == 0).all() and (got.prep_cached[prepared] == 1).all()
    else:
        columns.append("prep_nfe")
    assert got[columns].equals(want[columns])
    for path in want.output_path.dropna():
        assert (run_dir / path).read_bytes() == (reference / path).read_bytes(), path
    assert set(want.status) == {"ok", "failed"}  # the broken sample failed its own cells only


def test_ray_gives_the_same_cells_pngs_and_metrics_as_local(ray_instance, raw_config, local_run):
    run_dir = run(raw_config, RAY)
    assert_same_cells(run_dir, local_run)
    frame = cells(run_dir)
    assert frame.worker.str.contains("/cpu worker").all() and frame.worker.nunique() == 2
    manifest = Store(run_dir).info("manifest")
    assert manifest["executor"]["ray"] == ray.__version__ and len(manifest["executor"]["workers"]) == 2


def test_a_worker_killed_mid_unit_loses_no_cell_and_repeats_none(ray_instance, raw_config, local_run):
    config = build_config(raw_config)
    run_dir = new_run_dir(config, None)
    runner = Runner(config, run_dir, progress=False, executor=RAY)
    killed = []

    def kill_first_busy_worker():
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            busy = runner.executor.pids()
            if busy:
                pid = next(iter(busy.values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_busy_worker)
    killer.start()
    runner.write_manifest()
    runner.run()
    killer.join()
    runner.store.close()
    assert killed and runner.executor.rerun_units >= 1
    assert_same_cells(run_dir, local_run)


@pytest.mark.slow  # ~2 min on 2 loaded cores: a second driver process starts its own workers
def test_kill_9_of_the_driver_then_resume_on_ray(ray_instance, raw_config, local_run, tmp_path):
    """The driver joins the test's Ray (``--ray-address``); its actors die with it."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw_config))
    address = ray.get_runtime_context().gcs_address
    args = [str(tmp_path / "run.yaml"), "--executor", "ray", "--workers", "2", "--ray-address", address]
    run_dir = kill_9_after(args, tmp_path / "runs", cells=2)
    done_before = committed(run_dir / Store.FILENAME)
    _, counts = resume_run(run_dir, progress=False, executor=RAY)
    assert counts["already done"] == done_before and sum(counts.values()) == len(cells(local_run))
    assert_same_cells(run_dir, local_run)


def test_an_sd3_run_on_ray_equals_the_local_run(ray_instance, raw_config):
    """The flow family through the same executor: workers load tiny-sd3 and read the flow
    inversions the local run cached."""
    raw = {**raw_config, "backbone": {"name": "tiny-sd3"},
           "methods": {"sdedit": {"t0": 0.6, "steps": 3}, "flow_inversion": {"steps": 3}}}  # fmt: skip
    raw["output"] = str(Path(raw_config["output"]).parent / "sd3_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run(raw)
    finally:
        torch.set_num_threads(threads)
    assert_same_cells(run(raw, RAY), local, preparations_cached=True)


@pytest.mark.slow  # ~70 s on 2 loaded cores: two Ray actors each load the backbone
def test_iterative_chains_on_ray_equal_the_local_run(ray_instance, tmp_path):
    """A chain's turns run in order on one actor, each editing the previous turn's output there."""

    raw = {"dataset": {"name": None, "path": write_turns_manifest(tmp_path / "data"), "turns": "iterative"},
           "methods": {"sdedit": {"t0": 0.5, "steps": 4}}, "seeds": [0], "output": str(tmp_path / "runs")}  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run(raw)
    finally:
        torch.set_num_threads(threads)
    on_ray = run(raw, RAY)
    got, want = cells(on_ray), cells(local)
    assert list(got.index) == list(want.index) and got.input_key.equals(want.input_key)
    assert (got.status == "ok").all() and got.input_key.notna().sum() == 2 * 2
    for path in want.output_path:
        assert (on_ray / path).read_bytes() == (local / path).read_bytes(), path


@pytest.mark.slow  # ~35 s on 2 cores: two backbones loaded by each of two workers
def test_a_two_backbone_run_on_ray_equals_the_local_run(ray_instance, raw_config):
    """Several models in one run: each actor holds one backbone at a time and every cell records its
    own; the same cells and PNG bytes as locally, and the manifest lists both backbones."""
    raw = {**raw_config, "methods": {"sdedit": {"t0": 0.6, "steps": 3},
                                     "kontext": {"backbone": "tiny-kontext", "steps": 2}}}  # fmt: skip
    raw["output"] = str(Path(raw_config["output"]).parent / "two_backbone_runs")
    raw["dataset"] = {**raw["dataset"], "path": write_instruction_dataset(Path(raw["output"]).parent / "instructed")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run(raw)
    finally:
        torch.set_num_threads(threads)
    on_ray = run(raw, RAY)
    got, want = cells(on_ray), cells(local)
    assert list(got.index) == list(want.index) and got["backbone"].equals(want["backbone"])
    assert set(got["backbone"]) == {"tiny", "tiny-kontext"} and (got.status == "ok").all()
    for path in want.output_path:
        assert (on_ray / path).read_bytes() == (local / path).read_bytes(), path
    assert set(json.loads((on_ray / "manifest.json").read_text())["backbones"]) == {"tiny", "tiny-kontext"}


def write_instruction_dataset(folder: Path) -> str:
    """Two samples with prompts and an instruction (sdedit and kontext both run on them)."""
    extra = [{"id": f"instructed{i}", "image": f"img{i}.png", "source_prompt": "a cat", "target_prompt": "a dog",
              "instruction": "turn the cat into a dog"} for i in range(2)]  # fmt: skip
    path = Path(write_dataset(folder, n=2, extra=extra))
    lines = [line for line in path.read_text().splitlines() if "instructed" in line]
    path.write_text("\n".join(lines) + "\n")
    return str(path)
