import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench.execution.plan import cell_key
from bench.execution.runner import Runner, resume_run, start_run
from bench.method import EditResult, Method, Preparation, PreparationSpec
from bench.params import Param
from bench.registry import register
from bench.reporting.report import cells_table, summary_markdown
from bench.store import CellRecord, Store
from tests.helpers import read_cells, run_config


@register
class _NaNMethod(Method):
    name = "test_nan"

    def edit(self, backbone, sample, prep, setting, generator):
        return EditResult(torch.full((1, 3, backbone.resolution, backbone.resolution), float("nan")))


@dataclass(frozen=True)
class _CountedPrep(PreparationSpec):
    """Depends on ``a`` only; costs 1 NFE and 2 gradient evaluations and records each call."""

    kind = "test_counted"
    a: int

    def prepare(self, backbone, sample):
        _PrepCounter.calls.append((sample.id, self.a))
        with torch.no_grad():
            backbone.eps(backbone.encode_image(sample.image[None]), 10, backbone.encode_text(""))
        return Preparation(self.a, grad_evals=2)


@register
class _PrepCounter(Method):
    """Preparation depends on ``a`` only (``_CountedPrep``); every edit returns the source and
    raises when b = 3."""

    name = "test_prep"
    params = (Param("a", int, 0, low=0), Param("b", int, 0, low=0))
    calls: list = []

    @classmethod
    def preparation(cls, setting):
        return _CountedPrep(setting["a"])

    def edit(self, backbone, sample, prep, setting, generator):
        assert prep == setting["a"]
        if setting["b"] == 3:
            raise RuntimeError("b = 3 is cursed")
        return EditResult(sample.image[None].clone())


@dataclass(frozen=True)
class _FromDisk(PreparationSpec):
    """A preparation that reports itself as a disk-cache hit."""

    kind = "test_from_disk"

    def prepare(self, backbone, sample):
        return Preparation("from disk", cache_hit=True)


@register
class _CachedPrep(Method):
    """Reports its preparation as a disk-cache hit, saves a picture and labels the run."""

    name = "test_cached"

    @classmethod
    def preparation(cls, setting):
        return _FromDisk()

    def edit(self, backbone, sample, prep, setting, generator):
        from PIL import Image

        assert prep == "from disk"
        return EditResult(sample.image[None].clone(), grad_evals=3, artifacts={"attn": Image.new("RGB", (4, 4))},
                          labels=["untrained classifier"])  # fmt: skip




def test_run_commits_every_cell_and_survives_bad_samples(tmp_path, backbone):
    extra = [
        {"id": "no_target", "image": "img0.png", "source_prompt": "a cat"},
        {"id": "missing_file", "image": "nope.png", "source_prompt": "a cat", "target_prompt": "a dog"},
    ]
    config = run_config(tmp_path, {"reconstruct": {}, "sdedit": {"t0": [0.5, 1.0], "steps": 4}, "test_nan": {}}, extra)
    run_dir, counts = start_run(config, progress=False)
    cells = read_cells(run_dir)
    assert len(cells) == 4 * 4 and cells["key"].is_unique
    assert (cells[cells.sample_id == "missing_file"].status == "failed").all()
    assert cells[cells.sample_id == "missing_file"].error.str.contains("sample 'missing_file': image file not found").all()
    skipped = cells[(cells.sample_id == "no_target") & (cells.method == "sdedit")]
    assert (skipped.status == "skipped").all() and skipped.error.str.contains("target_prompt").all()
    assert cells[(cells.sample_id == "no_target") & (cells.method == "reconstruct")].status.item() == "ok"
    nan = cells[(cells.method == "test_nan") & (cells.sample_id != "missing_file")]
    assert (nan.status == "failed").all() and nan.error.str.contains("NaN").all()
    ok = cells[cells.status == "ok"]
    assert len(ok) == 2 * 3 + 1 and counts["ok"] == len(ok)
    assert ok["metric.psnr"].notna().all() and ok["metric.ssim"].notna().all()
    assert all((run_dir / p).is_file() for p in ok.output_path)
    sd = ok[ok.method == "sdedit"]
    assert sorted(sd.nfe) == [4, 4, 8, 8]  # t0 = 0.5 and 1 of 4 steps, 2 NFE per CFG step
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["labels"] == ["untrained backbone"]
    assert manifest["backbone"]["fingerprint"]["id"] == backbone.fingerprint_id
    assert {"torch", "diffusers", "transformers"} <= set(manifest["packages"])


def test_metrics_score_the_saved_png(tmp_path):
    config = run_config(tmp_path, {"test_prep": {}}, n=1)
    run_dir, _ = start_run(config, progress=False)
    cell = read_cells(run_dir).iloc[0]
    # test_prep returns the source itself: the saved image equals it, so PSNR is infinite and SSIM 1
    assert cell["metric.psnr"] == float("inf") and cell["metric.ssim"] == pytest.approx(1.0)


def test_preparation_is_computed_once_per_sample_and_preparation_key(tmp_path):
    _PrepCounter.calls.clear()
    config = run_config(tmp_path, {"test_prep": {"a": [1, 2], "b": [0, 1, 3]}}, seeds=[0, 1])
    run_dir, counts = start_run(config, progress=False)
    assert sorted(_PrepCounter.calls) == [("img0", 1), ("img0", 2), ("img1", 1), ("img1", 2)]
    cells = read_cells(run_dir)
    assert len(cells) == 2 * 6 * 2 and counts == {"ok": 16, "failed": 8, "skipped": 0, "already done": 0}
    failed = cells[cells.status == "failed"]
    assert failed.error.str.contains("b = 3 is cursed").all()
    first = cells.groupby(["sample_id", cells.setting.map(lambda s: json.loads(s)["a"])]).head(1)
    assert (first.prep_cached == 0).all() and (first.prep_nfe == 1).all() and (first.prep_grad_evals == 2).all()
    rest = cells.drop(first.index)
    assert (rest.prep_cached == 1).all() and (rest.prep_nfe == 0).all() and (rest.prep_grad_evals == 0).all()


def test_resume_recomputes_only_missing_cells(tmp_path):
    config = run_config(tmp_path, {"reconstruct": {}, "test_prep": {"a": [0, 1]}})
    run_dir, _ = start_run(config, progress=False)
    before = read_cells(run_dir).set_index("key")
    store = Store(run_dir)
    lost = before.index[:2].tolist()
    store.db.executemany("DELETE FROM cells WHERE key = ?", [(k,) for k in lost])
    store.close()
    _, counts = resume_run(run_dir, progress=False)
    assert counts["ok"] == 2 and counts["already done"] == len(before) - 2
    after = read_cells(run_dir).set_index("key")
    assert sorted(after.index) == sorted(before.index)
    untouched = before.index.difference(lost)
    assert (after.loc[untouched, "finished_at"] == before.loc[untouched, "finished_at"]).all()


def test_resume_refuses_a_changed_backbone(tmp_path):
    config = run_config(tmp_path, {"reconstruct": {}}, n=1)
    run_dir, _ = start_run(config, progress=False)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["backbone"]["fingerprint"]["id"] = "0" * 16
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    store = Store(run_dir)  # an unfinished run: a finished one returns before loading the backbone
    store.db.execute("DELETE FROM cells")
    store.close()
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="backbone fingerprint changed"):
        resume_run(run_dir, progress=False)


def test_same_sample_and_seed_give_the_same_noise_in_every_method(tmp_path):
    config = run_config(tmp_path, {"sdedit": {"t0": 1.0, "steps": 2, "w": [1.0, 1.0]}}, n=1, seeds=[0, 1])
    run_dir, _ = start_run(config, progress=False)
    cells = read_cells(run_dir)
    assert len(cells) == 2  # duplicate settings collapse
    images = [Path(run_dir, p).read_bytes() for p in cells.output_path]
    assert images[0] != images[1]  # different seeds differ


def test_cell_keys_are_stable():
    assert cell_key("sdedit", {"t0": 0.5, "w": 1.0}, "a", 0) == cell_key("sdedit", {"w": 1.0, "t0": 0.5}, "a", 0)
    assert cell_key("sdedit", {"t0": 0.5}, "a", 0) != cell_key("sdedit", {"t0": 0.5}, "a", 1)


def test_report_and_export(tmp_path):
    config = run_config(tmp_path, {"reconstruct": {}, "sdedit": {"t0": [0.5, 1.0], "steps": 2}, "test_nan": {}})
    run_dir, _ = start_run(config, progress=False)
    text = summary_markdown(run_dir)
    assert "untrained backbone" in text.splitlines()[0]
    assert "| sdedit | t0=0.5 | 2 | 0 | 0 |" in text and "| test_nan | — | 0 | 2 | 0 |" in text
    assert "psnr ↑" in text and "Fixed parameters: sdedit: w=7.5, steps=2" in text
    table = cells_table(run_dir)
    for col in ["method", "sample_id", "seed", "status", "error", "output_path", "param.t0", "param.w",
                "metric.psnr", "metric.ssim", "time_s", "nfe", "gpu_time_s", "peak_mem_mb", "labels"]:  # fmt: skip
        assert col in table.columns, col
    assert len(table) == 2 * 4 and (table.labels == "untrained backbone").all()


def test_dataset_selecting_nothing_leaves_no_run_folder(tmp_path):
    config = run_config(tmp_path, {"reconstruct": {}}, n=1)
    config.dataset = type(config.dataset)(name=None, path=config.dataset.path, edit_types=("change_style",))
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="selects no samples"):
        start_run(config, progress=False)
    assert not any((tmp_path / "runs").iterdir())


def test_runner_uses_given_backbone(tmp_path, backbone):
    config = run_config(tmp_path, {"reconstruct": {}}, n=1)
    run_dir = tmp_path / "manual"
    run_dir.mkdir()
    runner = Runner(config, run_dir, backbone=backbone, progress=False)
    assert runner.total_cells() == 1 and runner.run()["ok"] == 1


def test_cache_hits_artifacts_and_labels_are_recorded(tmp_path):
    run_dir, _ = start_run(run_config(tmp_path, {"test_cached": {}}, n=2), progress=False)
    cells = read_cells(run_dir)
    assert (cells.prep_cached == 1).all() and (cells.grad_evals == 3).all()
    for output in cells.output_path:
        assert (run_dir / output).with_suffix(".attn.png").is_file()
    store = Store(run_dir)
    assert store.info("labels") == ["untrained backbone", "untrained classifier"]
    store.close()
    assert "untrained classifier" in summary_markdown(run_dir).splitlines()[0]


def test_a_store_from_before_prep_grad_evals_gains_the_column(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / Store.FILENAME)
    db.execute("CREATE TABLE cells (key TEXT PRIMARY KEY, method TEXT NOT NULL, setting TEXT NOT NULL,"
               " sample_id TEXT NOT NULL, seed INTEGER NOT NULL, edit_type TEXT, status TEXT NOT NULL, error TEXT,"
               " output_path TEXT, time_s REAL, gpu_time_s REAL, peak_mem_mb REAL, nfe INTEGER, grad_evals INTEGER,"
               " prep_time_s REAL, prep_nfe INTEGER, prep_cached INTEGER, finished_at TEXT)")  # fmt: skip
    db.close()
    store = Store(tmp_path)
    store.commit_cell(CellRecord("k", "m", {"a": 1}, "s", 0, "ok", prep_grad_evals=4, prep_cached=True))
    cell = store.cells_frame().iloc[0]
    store.close()
    assert cell.prep_grad_evals == 4 and cell.prep_cached == 1 and json.loads(cell.setting) == {"a": 1}
