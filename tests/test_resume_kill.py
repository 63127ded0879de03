"""A run killed with SIGKILL at an arbitrary moment resumes to every cell exactly once."""

import signal
from pathlib import Path

import pytest
import yaml

from bench.execution.runner import resume_run
from bench.store import Store
from tests.helpers import committed, interrupt_after, write_dataset


def interrupt_mid_run(
    tmp_path, methods: dict, n_samples: int, after_cells: int, sig: int, batch_size: int = 1
) -> tuple[Path, int, str]:
    """Start ``editbench run`` in a subprocess, send ``sig`` once ``after_cells`` cells are
    committed; returns (the runs folder, the exit status, stderr)."""
    config = {"dataset": {"path": write_dataset(tmp_path / "data", n=n_samples), "name": None}, "methods": methods,
              "batch_size": batch_size}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "runs"
    status, stderr = interrupt_after([str(tmp_path / "run.yaml")], out, after_cells, sig)
    return out, status, stderr


@pytest.mark.parametrize("batch_size", [1, 3])
def test_kill_9_mid_run_then_resume(tmp_path, batch_size):
    sweep = {"reconstruct": {}, "sdedit": {"t0": [0.2, 0.4, 0.6, 0.8, 1.0], "steps": 25}}
    out, _, _ = interrupt_mid_run(tmp_path, sweep, n_samples=3, after_cells=5, sig=signal.SIGKILL, batch_size=batch_size)
    (run_dir,) = out.iterdir()
    done_before = committed(run_dir / Store.FILENAME)
    total = 3 * 6
    assert 5 <= done_before < total

    _, counts = resume_run(run_dir, progress=False)
    assert counts["already done"] == done_before
    assert counts["ok"] == total - done_before

    store = Store(run_dir)
    cells = store.cells_frame()
    store.close()
    assert len(cells) == total and cells["key"].is_unique
    assert (cells.status == "ok").all() and (cells.batch_size <= batch_size).all()
    assert all((run_dir / p).is_file() for p in cells.output_path)
    assert not any(p.endswith(".tmp") for p in cells.output_path)


def test_ctrl_c_names_the_run_folder_and_the_resume_command(tmp_path):
    """SIGINT mid-run: no traceback, the run folder (announced on stderr at the start) and the exact
    --resume command are printed, exit status 130."""
    sweep = {"sdedit": {"t0": [0.2, 0.4, 0.6, 0.8, 1.0], "steps": 25}}
    out, status, stderr = interrupt_mid_run(tmp_path, sweep, n_samples=2, after_cells=1, sig=signal.SIGINT)
    (run_dir,) = out.iterdir()
    assert status == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.splitlines()[0] == f"run folder: {run_dir}"
    assert stderr.rstrip().endswith(f"finish the run with:\n  editbench run --resume {run_dir}")
