"""Every path a run reads is fixed at its start (issue 39 item 1): relative paths start from the
config file's folder (``--set``: the working folder) and are stored absolute; a resume whose stored
relative path would read other files refuses, naming it."""

import json

import pytest
import yaml
from PIL import Image

from bench.errors import ConfigError
from bench.execution.config import load_config
from bench.execution.runner import resume_run, start_run
from bench.store import MANIFEST, Store
from tests.helpers import write_dataset


def _outputs(folder, colour) -> None:
    """Edited images of the two written samples, in the sources' 4:3 aspect."""
    folder.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (128, 96), colour).save(folder / f"img{i}.png")


@pytest.fixture
def two_folders(tmp_path):
    """``a/config.yaml`` naming ``external: {folder: u/out}``, and ``a/u/out`` and ``b/u/out`` with different images."""
    data = write_dataset(tmp_path / "data", n=2)
    _outputs(tmp_path / "a" / "u" / "out", (200, 0, 0))
    _outputs(tmp_path / "b" / "u" / "out", (0, 0, 200))
    config = tmp_path / "a" / "config.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"path": data}, "methods": {"external": {"folder": "u/out"}},
                                      "metrics": ["psnr"], "output": str(tmp_path / "runs")}))  # fmt: skip
    return tmp_path, config


def test_a_relative_path_starts_from_the_config_and_is_stored_absolute(two_folders, monkeypatch):
    tmp_path, config = two_folders
    monkeypatch.chdir(tmp_path / "b")  # it has its own u/out: the config's is the one read
    loaded = load_config(config)
    assert loaded.resolved["methods"]["external"][0]["folder"] == str(tmp_path / "a" / "u" / "out")
    given = load_config(config, overrides=["external.folder=u/out"])  # --set: from the working folder
    assert given.resolved["methods"]["external"][0]["folder"] == str(tmp_path / "b" / "u" / "out")
    assert loaded.resolved["metric_options"]["dreamsim_dir"] == str(tmp_path / "b" / "models")


def test_a_resume_that_would_read_other_files_refuses_with_the_reason(two_folders, monkeypatch):
    """A run whose manifest stored the folder as typed (as runs did before): resumed from another
    folder holding its own ``u/out``, it would mix both folders' images under one setting."""
    tmp_path, config = two_folders
    monkeypatch.chdir(tmp_path / "a")
    run_dir, counts = start_run(load_config(config), progress=False)
    assert counts["ok"] == 2
    manifest = json.loads((run_dir / MANIFEST).read_text())
    manifest["config"]["methods"]["external"][0]["folder"] = "u/out"
    (run_dir / MANIFEST).write_text(json.dumps(manifest))
    store = Store(run_dir)
    store.save_manifest(manifest)
    store.db.execute("DELETE FROM cells WHERE sample_id = 'img1'")  # killed before its second cell
    store.close()
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(ConfigError, match=r"cannot resume: .*external\.folder = 'u/out' \(from here: .*b/u/out\)"):
        resume_run(run_dir, progress=False)
