"""Several backbones in one run (issue 35 item 1): ``methods.<name>.backbone``, the plan grouped
by backbone, a worker holding one model at a time, and the backbone carried into the store,
manifest, export, report, dry run and resume."""

import gc
import json
import signal
import weakref

import pytest
import yaml

from bench.errors import ConfigError
from bench.execution.config import build_config, config_from_resolved
from bench.execution.plan import dry_run_text, plan_units
from bench.execution.runner import resume_run, start_run
from bench.execution.worker import CellWorker
from bench.reporting.compare import compare_runs
from bench.reporting.report import cells_table, summary_markdown
from bench.store import Store
from tests.helpers import committed, interrupt_after, run_config, write_dataset

TWO = {"sdedit": {"t0": [0.5, 1.0], "steps": 2}, "flowedit": {"backbone": "tiny-flux", "steps": 4, "n_max": 3}}


def test_a_method_names_its_backbone_over_the_default():
    config = build_config({"backbone": {"name": "tiny", "dtype": "fp16", "resolution": 128},
                           "methods": {"sdedit": {}, "flowedit": {"backbone": "tiny-flux"},
                                       "reconstruct": {"backbone": {"name": "tiny", "dtype": "fp32"}}}})  # fmt: skip
    flux = config.backbone_of("flowedit")
    assert (flux.name, flux.dtype, flux.resolution) == ("tiny-flux", "fp16", None)  # dtype inherited, size its own
    assert config.backbone_of("sdedit") == config.backbone
    assert list(config.backbones) == ["tiny (dtype=fp16, resolution=128)", "tiny-flux",
                                      "tiny (dtype=fp32, resolution=128)"]
    assert config_from_resolved(config.resolved).backbones == config.backbones  # --resume rebuilds it


def test_a_bad_method_backbone_is_a_config_error():
    for value in [3, {"dtype": "fp64"}, {"name": "tiny", "colour": "red"}]:
        with pytest.raises(ConfigError):
            build_config({"methods": {"sdedit": {"backbone": value}}})
    with pytest.raises(ConfigError, match="flowedit"):  # a method on a family it does not support
        build_config({"methods": {"flowedit": {"backbone": "tiny"}}})


def test_units_are_grouped_by_backbone(tmp_path):
    config = run_config(tmp_path, {"sdedit": {"t0": [0.5, 1.0], "steps": 2}, "flowedit": TWO["flowedit"],
                                   "reconstruct": {}}, n=3)  # fmt: skip
    from bench.data import load_dataset

    labels = {m: config.backbone_label(m) for m in config.settings}
    units = plan_units(config.settings, load_dataset(config.dataset), [0], set(), 1, labels)
    order = [unit.backbone for unit in units]
    # each backbone's units together, the default's first
    assert order == sorted(order, key=["tiny", "tiny-flux"].index)
    assert [unit.unit_id for unit in units] == list(range(len(units)))
    text = dry_run_text(config)
    assert "backbone | method" in text and "backbone tiny-flux: 3 cells, 18 NFE" in text


def test_the_worker_frees_a_backbone_before_loading_the_next(tmp_path):
    worker = CellWorker(run_config(tmp_path, TWO, n=1))
    first = weakref.ref(worker.backbone)
    worker.use_backbone("tiny-flux")
    gc.collect()
    assert first() is None and worker.backbone.family_name == "flux"
    assert set(worker.described) == {"tiny", "tiny-flux"}


def test_a_two_backbone_run_carries_the_backbone_everywhere(tmp_path):
    run_dir, counts = start_run(run_config(tmp_path, TWO, n=2), progress=False)
    assert counts["ok"] == 6
    table = cells_table(run_dir)
    assert dict(zip(table["method"], table["backbone"])) == {"sdedit": "tiny", "flowedit": "tiny-flux"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert list(manifest["backbones"]) == ["tiny", "tiny-flux"]
    assert all(info["fingerprint"]["id"] and info["images"]["rule"] for info in manifest["backbones"].values())
    report = summary_markdown(run_dir)
    assert "sdedit @ tiny" in report and "flowedit @ tiny-flux" in report
    comparison = compare_runs(run_dir, run_dir)
    assert {c.method for c in comparison.changes} == {"sdedit", "flowedit"}


def test_kill_9_and_resume_of_a_two_backbone_run_gives_every_cell_once(tmp_path):
    methods = {"sdedit": {"t0": [0.5, 1.0], "steps": 2},
               "flowedit": {"backbone": "tiny-flux", "steps": 4, "n_max": [2, 3, 4]}}  # fmt: skip
    config = {"dataset": {"path": write_dataset(tmp_path / "data", n=3), "name": None}, "methods": methods}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    interrupt_after([str(tmp_path / "run.yaml")], tmp_path / "runs", 8, signal.SIGKILL)  # inside the second backbone
    (run_dir,) = (tmp_path / "runs").iterdir()
    done_before = committed(run_dir / Store.FILENAME)
    assert 8 <= done_before < 15
    _, counts = resume_run(run_dir, progress=False)
    assert counts["already done"] == done_before and counts["ok"] == 15 - done_before
    store = Store(run_dir)
    cells = store.cells_frame()
    store.close()
    assert len(cells) == 15 and cells["key"].is_unique and (cells.status == "ok").all()
    assert cells.groupby("method")["backbone"].unique().map(list).to_dict() == {"sdedit": ["tiny"],
                                                                                 "flowedit": ["tiny-flux"]}  # fmt: skip


def test_grids_and_the_gallery_show_the_source_at_each_backbones_size(tmp_path):
    """Backbones of two sizes (64 and 128 px): the report's grid shows the source at both sizes,
    each method's tiles at its own backbone's, and the gallery holds the source at both."""
    import numpy as np
    from PIL import Image

    from bench.reporting.aggregate import load_run
    from bench.reporting.gallery import gallery_data
    from bench.reporting.report import build_report

    big = {"name": "tiny", "resolution": 128}
    config = run_config(tmp_path, {"reconstruct": {}, "sdedit": {"t0": 0.6, "steps": 2, "backbone": big}}, n=1,
                        backbone={"name": "tiny", "resolution": 64})  # fmt: skip
    run_dir, counts = start_run(config, progress=False)
    assert counts["ok"] == 2
    report = build_report(run_dir, n_grid=1, keep_figures=True)
    (grid,) = [fig for fig in report.figures if fig.get_suptitle().startswith("sample img0")]
    tiles = {ax.get_title().split("\n")[0]: ax.get_images()[0].get_array().shape[:2] for ax in grid.axes
             if ax.axison and ax.get_images()}  # fmt: skip
    sources = {title: shape for title, shape in tiles.items() if title.startswith("source")}
    assert sorted(sources.values()) == [(64, 64), (128, 128)], tiles
    assert tiles["reconstruct"] == (64, 64) and tiles["sdedit"] == (128, 128)
    (tmp_path / "assets").mkdir()
    data = gallery_data(load_run(run_dir), tmp_path, tmp_path / "assets")
    (entry,) = data["samples"]
    files = [entry["source"]] + [more["source"] for more in entry["more_sources"]]
    assert sorted(np.asarray(Image.open(tmp_path / f)).shape[:2] for f in files) == [(64, 64), (128, 128)]
