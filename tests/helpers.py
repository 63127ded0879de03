"""Helpers shared by tests: small datasets written on the fly, and diffusers reference pipelines."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_dataset(folder, n: int = 2, extra: list[dict] = ()) -> str:
    """A JSONL manifest of ``n`` random photos with prompts and masks, plus ``extra`` entries."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        entries.append({
            "id": f"img{i}", "image": f"img{i}.png", "source_prompt": "a photo of a cat",
            "target_prompt": "a photo of a dog", "edit_type": "change_object", "edit_words": ["cat", "dog"],
            "mask_shapes": [{"shape": "ellipse", "box": [0.25, 0.25, 0.75, 0.75]}],
        })  # fmt: skip
    entries += list(extra)
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    return str(path)


def run_config(tmp_path, methods, extra=(), n=2, **more):
    """A validated config running ``methods`` on ``n`` written samples (plus ``extra`` entries)."""
    from bench.execution.config import build_config

    data = write_dataset(tmp_path / "data", n=n, extra=extra)
    raw = {"dataset": {"name": None, "path": data}, "methods": methods, "output": str(tmp_path / "runs"), **more}
    return build_config(raw)


def read_cells(run_dir):
    """A run folder's cells as a DataFrame (``Store.cells_frame``)."""
    from bench.store import Store

    store = Store(run_dir)
    try:
        return store.cells_frame()
    finally:
        store.close()


def diffusers_pipeline(pipeline_class, backbone, steps: int, **components):
    """A diffusers ``pipeline_class`` over the backbone's own components and a fresh ``steps``-step
    scheduler, without its progress bar: the reference an adapter is compared with.
    ``components`` add or replace some (a ``controlnet``, an ``adapter``, another ``unet``)."""
    pipe = pipeline_class(**{
        "vae": backbone.vae, "text_encoder": backbone.text_encoder, "tokenizer": backbone.tokenizer,
        "unet": backbone.unet, "scheduler": backbone.new_scheduler(steps), "safety_checker": None,
        "feature_extractor": None, "requires_safety_checker": False, **components,
    })  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def committed(db: Path) -> int:
    """Cells committed so far to the store ``db`` (0 before it exists), read-only: safe while a run writes it."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def interrupt_after(args: list[str], out: Path, cells: int, sig: int) -> tuple[int, str]:
    """Start ``run_bench.py run ARGS`` (new run folder under ``out``), send ``sig`` once ``cells``
    cells are committed; returns its exit status and stderr."""
    from bench.paths import repo_root

    proc = subprocess.Popen(
        [sys.executable, "run_bench.py", "run", *args, "--out", str(out), "--quiet"],
        cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            runs = list(out.glob("*/results.sqlite")) if out.exists() else []
            if runs and committed(runs[0]) >= cells:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be interrupted: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stderr.decode()


def kill_9_after(args: list[str], out: Path, cells: int) -> Path:
    """``interrupt_after`` with SIGKILL; returns the run folder."""
    interrupt_after(args, out, cells, signal.SIGKILL)
    (run_dir,) = out.iterdir()
    return run_dir
