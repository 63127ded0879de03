"""A run killed with SIGKILL at an arbitrary moment resumes to every cell exactly once."""

import yaml

from bench.runner import resume_run
from bench.store import Store
from tests.helpers import committed, kill_9_after, write_dataset


def test_kill_9_mid_run_then_resume(tmp_path):
    config = {
        "dataset": {"path": write_dataset(tmp_path / "data", n=3), "name": None},
        "methods": {"reconstruct": {}, "sdedit": {"t0": [0.2, 0.4, 0.6, 0.8, 1.0], "steps": 25}},
        "seeds": [0],
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run_dir = kill_9_after([str(tmp_path / "run.yaml")], tmp_path / "runs", cells=5)
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
    assert (cells.status == "ok").all()
    assert all((run_dir / p).is_file() for p in cells.output_path)
    assert not any(p.endswith(".tmp") for p in cells.output_path)
