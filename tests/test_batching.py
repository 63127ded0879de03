"""Batched execution in the runner: failure isolation, out of memory, cost per cell, batch size recorded.

That every method's batch equals its cells run alone is the conformance battery's check (a),
over every registered method (tests/test_conformance.py, with the float-noise bound it uses).
"""

import weakref
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from bench.diffusion.sampling import source_latents
from bench.errors import ConfigError
from bench.execution.runner import start_run
from bench.method import EditResult, Method, Preparation, PreparationSpec
from bench.registry import register
from bench.reporting.report import cells_table
from tests.helpers import read_cells, run_config


@register
class _PoisonedRow(Method):
    """A batched method returning the source, except NaN for sample ``img1``; counts its batches."""

    name = "test_poisoned_row"
    batch_sizes: list = []

    def edit_batch(self, backbone, rows, setting):
        type(self).batch_sizes.append(len(rows))
        backbone.eps(source_latents(backbone, rows), 10, backbone.encode_text("").expand(len(rows), -1, -1))
        images = [row.sample.image[None].clone() for row in rows]
        return [EditResult(image * (float("nan") if row.sample.id == "img1" else 1)) for row, image in zip(rows, images)]


@register
class _NeedsSmallBatches(Method):
    """Runs out of memory on batches of more than two cells; one UNet evaluation per cell."""

    name = "test_small_batches"

    def edit_batch(self, backbone, rows, setting):
        if len(rows) > 2:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated at batch {len(rows)})")
        backbone.eps(source_latents(backbone, rows), 10, backbone.encode_text("").expand(len(rows), -1, -1))
        return [EditResult(row.sample.image[None].clone()) for row in rows]


def test_a_nan_row_fails_only_its_own_cell(tmp_path):
    _PoisonedRow.batch_sizes.clear()
    config = run_config(tmp_path, {"test_poisoned_row": {}}, n=4, batch_size=4)
    run_dir, counts = start_run(config, progress=False)
    cells = read_cells(run_dir).set_index("sample_id")
    assert counts["ok"] == 3 and counts["failed"] == 1
    assert cells.loc["img1", "status"] == "failed" and "NaN" in cells.loc["img1", "error"]
    assert (cells.drop("img1").status == "ok").all() and (cells.drop("img1").nfe == 1).all()
    assert _PoisonedRow.batch_sizes == [4, 1, 1, 1, 1]  # the batch, then each cell alone
    assert (cells.batch_size == 1).all() and cells.batch_id.is_unique


def test_out_of_memory_halves_the_batch(tmp_path):
    config = run_config(tmp_path, {"test_small_batches": {}}, n=4, batch_size=4)
    run_dir, counts = start_run(config, progress=False)
    cells = read_cells(run_dir)
    assert counts["ok"] == 4 and (cells.batch_size == 2).all() and cells.batch_id.nunique() == 2
    assert (cells.nfe == 1).all()
    assert run_dir.joinpath("manifest.json").read_text().count('"batch_size": 4') == 1


def test_cost_is_split_over_the_batch_and_exported(tmp_path):
    config = run_config(tmp_path, {"sdedit": {"t0": 0.5, "steps": 4}}, n=2, seeds=[0, 1], batch_size=4)
    run_dir, _ = start_run(config, progress=False)
    cells = read_cells(run_dir)
    assert (cells.batch_size == 4).all() and cells.batch_id.nunique() == 1
    assert (cells.nfe == 4).all()  # 2 of 4 steps, CFG: 2 NFE per step per cell, as unbatched
    assert cells.time_s.nunique() == 1 and (cells.time_s > 0).all()
    table = cells_table(run_dir)
    assert {"batch_size", "batch_id"} <= set(table.columns)


def test_batch_size_1_and_4_give_the_same_cells(tmp_path):
    methods = {"reconstruct": {}, "sdedit": {"t0": [0.5, 1.0], "steps": 3}, "ilvr": {"steps": 3, "N": 2}}
    runs = {}
    for size in (1, 4):
        config = run_config(tmp_path / str(size), methods, n=3, seeds=[0, 1], batch_size=size)
        run_dir, counts = start_run(config, progress=False)
        assert counts["ok"] == 3 * 3 * 2 + 3  # reconstruct is deterministic given the sample: one seed (issue 39)
        runs[size] = read_cells(run_dir).set_index("key").sort_index()
    one, four = runs[1], runs[4]
    assert list(one.index) == list(four.index)
    assert (one.nfe == four.nfe).all() and (four.batch_size > 1).any()
    for metric in ("metric.psnr", "metric.ssim"):
        assert np.allclose(one[metric], four[metric], atol=1e-3, equal_nan=True)


def test_batch_size_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="batch_size = 0"):
        run_config(tmp_path, {"reconstruct": {}}, batch_size=0)


class _Tracked:
    """A preparation value a test can watch die (through a weak reference)."""


@dataclass(frozen=True)
class _TrackedSpec(PreparationSpec):
    kind: ClassVar[str] = "test_tracked"

    def prepare(self, backbone, sample):
        value = _Tracked()
        _TrackedPreparation.made.append(weakref.ref(value))
        return Preparation(value)


@register
class _TrackedPreparation(Method):
    """Returns the source; records, per batch, how many of its preparations are still alive."""

    name = "test_tracked_preparation"
    made: list = []
    alive: list = []

    @classmethod
    def preparation(cls, setting):
        return _TrackedSpec()

    def edit_batch(self, backbone, rows, setting):
        type(self).alive.append(sum(ref() is not None for ref in self.made))
        return [EditResult(row.sample.image[None].clone()) for row in rows]


def test_the_worker_drops_a_preparation_after_its_last_batch(tmp_path, backbone):
    """A unit of three samples, one cell a batch: when a sample's cells are done its preparation is
    released, so the unit holds one at a time (KV-Edit's are ~17 GB a sample), not all three."""
    from bench.execution.plan import Cell, WorkUnit, cell_key, dataset_refs
    from bench.execution.worker import CellWorker

    _TrackedPreparation.made.clear(), _TrackedPreparation.alive.clear()
    config = run_config(tmp_path, {"test_tracked_preparation": {}}, n=3, metrics=["psnr"])
    setting = config.settings["test_tracked_preparation"][0]
    cells = [Cell(cell_key("test_tracked_preparation", setting, ref.id, 0), "test_tracked_preparation", setting, ref)
             for ref in dataset_refs(config)]  # fmt: skip
    unit = WorkUnit(0, "test_tracked_preparation", [[cell] for cell in cells] + [[cells[0]]])
    outcomes = list(CellWorker(config, backbone).run_unit(unit))
    assert [o.record.status for o in outcomes] == ["ok"] * 4
    assert _TrackedPreparation.alive == [1, 2, 2, 1]  # sample 0's kept for its second batch; 1's dropped after its own
    assert len(_TrackedPreparation.made) == 3 and all(ref() is None for ref in _TrackedPreparation.made)
