"""Reliability under hostile input and concurrency (issue 17): injective output names, atomic
writes with unique temporaries, one writer per run, side files that survive damage, runs and
scores that can always be finished, and CLI errors without tracebacks."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from bench.execution import runner as runner_module
from bench.execution.config import build_config
from bench.execution.runlock import RunLocked, run_lock
from bench.execution.runner import Runner, resume_run
from bench.paths import output_stem, repo_root, write_atomic
from bench.reporting.report import cells_table
from bench.store import Store, read_manifest
from bench.weights import file_digest
from run_bench import main
from tests.helpers import read_cells, write_dataset


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def small_run(tmp_path, backbone, extra=(), n=1, metrics=("psnr",), **raw) -> Path:
    """A finished reconstruct run over ``n`` photos plus ``extra`` entries, on the session backbone."""
    data = write_dataset(tmp_path / "data", n=n, extra=extra)
    config = build_config({"dataset": {"name": None, "path": data}, "methods": {"reconstruct": {}},
                           "metrics": list(metrics), **raw})  # fmt: skip
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runner = Runner(config, run_dir, backbone=backbone, progress=False)
    runner.write_manifest()
    runner.run()
    runner.store.close()
    return run_dir


@pytest.fixture
def resume_on_session_backbone(backbone, monkeypatch):
    """``resume_run`` builds its backbone from the manifest; let it reuse the session's tiny one."""
    monkeypatch.setattr(runner_module, "Backbone", lambda spec: backbone)


# -- item 2: output names --------------------------------------------------------------------
def test_output_names_are_injective_and_short(tmp_path, backbone):
    long_id = "x" * 300
    assert output_stem("a/b") != output_stem("a_b") and output_stem("a/b").startswith("a_b-")
    assert len(output_stem(long_id)) <= 80 and not output_stem("..").startswith(".")
    extra = [{"id": i, "image": "img0.png", "source_prompt": "a cat"} for i in ("a/b", "a_b", long_id)]
    cells = read_cells(small_run(tmp_path, backbone, extra))
    assert (cells.status == "ok").all(), cells.error.tolist()
    assert cells.output_path.is_unique and all(len(Path(p).name) < 100 for p in cells.output_path)


# -- item 4: write_atomic --------------------------------------------------------------------
def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    target, errors = tmp_path / "f.json", []

    def writer(text):
        try:
            for _ in range(300):
                write_atomic(target, lambda p: p.write_text(text))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a" * 1000, "b" * 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and target.read_text() in ("a" * 1000, "b" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_stale_temporaries_of_a_path_are_removed_when_it_is_rewritten(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "entry.safetensors"
    stale = [f"entry.safetensors.tmp-{dead.pid}", f"entry.safetensors.tmp-{dead.pid}-0a1b2c3d", "entry.safetensors.tmp"]
    live = [f"entry.safetensors.tmp-{os.getpid()}-ffff0000", f"other.png.tmp-{dead.pid}"]
    for name in stale + live:
        (tmp_path / name).write_text("half")
    write_atomic(target, lambda p: p.write_text("whole"))
    assert target.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(live + ["entry.safetensors"])


# -- item 5: one writer per run --------------------------------------------------------------
def test_a_second_writer_of_a_run_fails_at_once_naming_the_holder(tmp_path, backbone):
    run_dir = small_run(tmp_path, backbone)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bench.execution.runlock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(run_dir)],
        cwd=repo_root(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(RunLocked, match=rf"run {run_dir} is being written by another process \(pid {holder.pid}\)"):
            resume_run(run_dir, progress=False)
        assert time.monotonic() - started < 2  # before any model loads
        result = cli("score", run_dir, "--metrics", "mse")
        assert result.exit_code == 1 and f"(pid {holder.pid})" in result.output and "Traceback" not in result.output
        with pytest.raises(RunLocked), run_lock(run_dir):  # a second lock in this process is refused too
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # a crashed holder releases the lock
        holder.wait(timeout=30)
    with run_lock(run_dir):
        assert (run_dir / "run.lock").read_text().strip() == str(os.getpid())


# -- item 6: side files ----------------------------------------------------------------------
def test_a_truncated_weight_digest_memo_is_recomputed_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    digest = file_digest(weights)
    memo = tmp_path / "cache" / "weight_digests.json"
    memo.write_text(memo.read_text()[:5])
    with pytest.warns(UserWarning, match="weight_digests.json is unreadable"):
        assert file_digest(weights) == digest
    assert json.loads(memo.read_text()) and not list(memo.parent.glob("*.tmp*"))


# -- item 7: a run killed before its backbone loaded -----------------------------------------
def test_a_run_killed_before_its_backbone_loaded_can_be_resumed(tmp_path, monkeypatch, resume_on_session_backbone):
    data = write_dataset(tmp_path / "data", n=1)
    config = build_config({"dataset": {"name": None, "path": data}, "methods": {"reconstruct": {}}})
    out = tmp_path / "runs"
    with monkeypatch.context() as patch:
        patch.setattr(runner_module.Runner, "__init__", lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
        child = os.fork()
        if child == 0:  # a process killed -9 while the backbone loads: no cleanup runs
            try:
                runner_module.start_run(config, out, progress=False)
            finally:
                os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    (run_dir,) = out.iterdir()
    started = read_manifest(run_dir)
    _, counts = resume_run(run_dir, progress=False)
    assert counts["ok"] == 1
    manifest = read_manifest(run_dir)
    assert manifest["created"] == started["created"] and "fingerprint" in manifest["backbone"]
    bare = tmp_path / "bare"
    bare.mkdir()
    result = cli("run", "--resume", bare)
    assert result.exit_code == 1 and "no manifest.json" in result.output and "delete it and start the run again" in result.output


# -- item 8: a killed score ------------------------------------------------------------------
def test_a_killed_score_is_finished_by_resume_or_a_rerun_computing_only_missing_values(
    tmp_path, backbone, monkeypatch, resume_on_session_backbone
):
    from bench.execution.scoring import score_run

    run_dir = small_run(tmp_path, backbone, n=3, metric_options={"batch_size": 1})
    writes = []
    real_add = Store.add_cell_metrics

    def add(store, key, values, fail_at=None):
        writes.append((key, dict(values)))
        if len(writes) == fail_at:
            raise KeyboardInterrupt  # killed mid-score
        real_add(store, key, values)

    monkeypatch.setattr(Store, "add_cell_metrics", lambda s, k, v: add(s, k, v, fail_at=2))
    with pytest.raises(KeyboardInterrupt):
        score_run(run_dir, ["mse"], progress=False)
    assert "mse" in read_manifest(run_dir)["config"]["metrics"]
    first = writes[0]
    monkeypatch.setattr(Store, "add_cell_metrics", lambda s, k, v: add(s, k, v))
    writes.clear()
    _, counts = resume_run(run_dir, progress=False)
    assert counts["already done"] == 3 and len(writes) == 2 and first[0] not in {k for k, _ in writes}
    cells = read_cells(run_dir)
    assert cells["metric.mse"].notna().all()
    assert cells.set_index("key").loc[first[0], "metric.mse"] == first[1]["mse"]

    monkeypatch.setattr(Store, "add_cell_metrics", lambda s, k, v: add(s, k, v, fail_at=1))
    writes.clear()
    with pytest.raises(KeyboardInterrupt):
        score_run(run_dir, ["ssim"], progress=False)
    monkeypatch.setattr(Store, "add_cell_metrics", lambda s, k, v: add(s, k, v))
    writes.clear()
    assert score_run(run_dir, ["ssim", "mse"], progress=False)["cells scored"] == 3
    assert sorted(v for _, vs in writes for v in vs) == ["ssim"] * 3


# -- item 11: no raw tracebacks --------------------------------------------------------------
def test_user_mistakes_are_one_line_errors(tmp_path):
    data = write_dataset(tmp_path / "data", n=1)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"name": None, "path": data}, "methods": {"reconstruct": {}}}))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    bin_only = tmp_path / "pipeline"
    for sub in ("unet", "vae", "text_encoder"):  # a real pipeline folder, with .bin weights only
        (bin_only / sub).mkdir(parents=True)
        (bin_only / sub / "config.json").write_text("{}")
        (bin_only / sub / "pytorch_model.bin").write_bytes(b"pickle")
    clip_bin = tmp_path / "clip"
    clip_bin.mkdir()
    (clip_bin / "pytorch_model.bin").write_bytes(b"pickle")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"name": "some other tool"}))
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "manifest.json").write_text("{not json")
    cases = {
        "invalid --set YAML": (["run", config, "--set", "sdedit.t0=[0.3"], "--set 'sdedit.t0=\\[0.3': the value is not valid YAML"),
        ".bin backbone": (["run", config, "--backbone", bin_only, "--out", tmp_path / "runs"],
                          "sub-folder 'unet' cannot be loaded: .* holds only .bin weights .*never loaded"),
        ".bin extractor": (["run", config, "--set", "metrics=clip_score", "--set", f"metric_options.clip_model={clip_bin}"],
                           "holds only .bin weights .*never loaded"),
        "output is a file": (["run", config, "--set", f"output={a_file}"], "output folder .* is a file"),
        "output under a file": (["run", config, "--out", a_file / "sub"], "output folder .* cannot be created"),
        "foreign manifest": (["run", "--resume", foreign], "is not an editbench run manifest"),
        "garbled manifest": (["run", "--resume", garbled], "is not an editbench run manifest \\(not valid JSON"),
    }  # fmt: skip
    for what, (args, message) in cases.items():
        result = cli(*args)
        assert result.exit_code == 1, (what, result.output)
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, (what, result.output)
        assert re.search(f"^Error: .*{message}", result.output), (what, result.output)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# -- item 12: recorded warnings and NaN reasons ----------------------------------------------
def test_clipped_pie_masks_are_recorded_in_the_run(tmp_path, backbone):
    folder = tmp_path / "pie"
    (folder / "annotation_images").mkdir(parents=True)
    Image.fromarray(np.full((512, 512, 3), 128, dtype=np.uint8)).save(folder / "annotation_images" / "0.png")
    entry = {"image_path": "0.png", "original_prompt": "a cat", "editing_prompt": "a [dog]", "editing_type_id": "1",
             "blended_word": "cat dog", "mask": [512 * 512 - 4, 9]}  # fmt: skip
    (folder / "mapping_file.json").write_text(json.dumps({"s0": entry}))
    config = build_config({"dataset": {"name": None, "path": str(folder)}, "methods": {"reconstruct": {}}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Runner(config, run_dir, backbone=backbone, progress=False).run()
    store = Store(run_dir)
    (warning,) = store.info("warnings")
    store.close()
    assert "sample 's0'" in warning and "5 pixels past the end" in warning


def test_export_gives_the_reason_where_a_value_is_nan(tmp_path, backbone):
    extra = [{"id": "no_mask", "image": "img0.png", "source_prompt": "a cat"}]
    run_dir = small_run(tmp_path, backbone, extra, metrics=("psnr", "psnr_bg"))
    table = cells_table(run_dir).set_index("sample_id")
    assert np.isnan(table.loc["no_mask", "metric.psnr_bg"]) and "mask" in table.loc["no_mask", "nan_reason.psnr_bg"]
    assert np.isfinite(table.loc["img0", "metric.psnr_bg"]) and table.loc["img0", "nan_reason.psnr_bg"] == ""
    assert (table["nan_reason.psnr"] == "").all()
    cli("export", run_dir, "--csv", tmp_path / "cells.csv")
    assert "nan_reason.psnr_bg" in (tmp_path / "cells.csv").read_text().splitlines()[0]
