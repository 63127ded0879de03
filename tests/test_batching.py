"""Batched execution: a cell's result is the same whatever batch it runs in (issue: batched execution).

Every ported method runs a batch of 4 rows mixing two samples (different images, prompts and
masks) and two seeds, and each row must equal the same cell run alone: the same NFE, gradient
evaluations and artifacts, and images equal to float noise.

Float noise, measured on this CPU: oneDNN picks convolution kernels by batch size, so one UNet
evaluation of a batch differs from the same rows run alone by up to ~2.4e-6 (native convolutions
are batch-invariant, and much slower). CFG at w = 7.5 extrapolates that difference 7.5-fold at
every step and the untrained tiny VAE decoder amplifies it again: the largest image difference
measured is 8e-5 (p2p over negative-prompt inversion), 1e-5 at w = 1. Images are compared at
``IMAGE_TOLERANCE`` (a quarter of one 8-bit level is 1e-3); a row given another row's prompt,
mask or noise differs by more than 1e-3, which the last asserts check. The VAE itself runs row
by row (``bench.diffusion.sampling``), adding no noise of its own.
"""

import numpy as np
import pytest
import torch

from bench.data import Sample
from bench.diffusion.sampling import source_latents
from bench.errors import ConfigError
from bench.execution.runner import start_run
from bench.method import EditResult, Method
from bench.registry import get_method, register
from bench.reporting.report import cells_table
from tests.helpers import cell_rows, read_cells, run_config

STEPS = 3
IMAGE_TOLERANCE = 1e-4


def _image(seed: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)[0]


def _mask(size: int, box: tuple[float, float, float, float]) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    top, left, bottom, right = (int(v * size) for v in box)
    mask[:, top:bottom, left:right] = 1
    return mask


@pytest.fixture(scope="module")
def samples(backbone):
    size = backbone.resolution
    return [
        Sample("cat", _image(0, size), "a photo of a cat on a sofa", "a photo of a dog on a sofa",
               mask=_mask(size, (0.2, 0.2, 0.7, 0.8)), edit_words=("cat", "dog")),
        Sample("car", _image(1, size), "a red car in the street", "a blue car in the old street",
               mask=_mask(size, (0.4, 0.1, 0.9, 0.6)), edit_words=("red", "blue")),
    ]  # fmt: skip


CASES = [
    ("sdedit", {"t0": 0.7, "w": 7.5}),
    ("cfg", {"w": 5.0}),
    ("cfg", {"w": 3.0, "t0": 0.6}),
    ("ilvr", {"N": 2, "cond_stop": 0.7}),
    ("repaint", {"r": 2, "j": 2}),
    ("blended_latent", {"t0": 0.9, "paste_source": True}),
    ("ddim_inversion", {"w": 3.0}),
    ("null_text_inversion", {"inner_steps": 2}),
    ("p2p", {"inversion": "ddim", "attention_maps": True}),
    ("p2p", {"inversion": "null_text", "inner_steps": 2, "edit": "refine"}),
    ("p2p", {"inversion": "negative_prompt", "blend_words": "none", "cross_replace_words": "a:1"}),
    ("p2p", {"inversion": "direct", "attention_maps": True}),
    ("p2p", {"inversion": "none", "self_replace_steps": 1.0}),
]


def _edit(method, backbone, rows, setting):
    before = backbone.nfe.count
    results = method.edit_batch(backbone, rows, setting)
    return results, backbone.nfe.count - before


@pytest.mark.parametrize("name,given", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_a_batch_equals_its_cells_run_alone(backbone, samples, name, given):
    method = get_method(name)()
    assert method.batched, f"{name} should implement edit_batch"
    setting = method.resolve({"steps": STEPS, **given})
    preps = {s.id: method.prepare(backbone, s, setting) for s in samples}
    preps = {k: getattr(v, "value", v) for k, v in preps.items()}

    batch, batch_nfe = _edit(method, backbone, cell_rows(samples, preps), setting)
    assert len(batch) == 4
    for row, together in zip(cell_rows(samples, preps), batch):
        (alone,), nfe = _edit(method, backbone, [row], setting)
        assert (together.image - alone.image).abs().max().item() <= IMAGE_TOLERANCE
        assert nfe * 4 == batch_nfe and together.grad_evals == alone.grad_evals
        assert together.artifacts.keys() == alone.artifacts.keys()
        for key in alone.artifacts:  # colour-mapped float maps: the same noise may land one colour step apart
            a, b = (np.asarray(r.artifacts[key]).astype(int) for r in (together, alone))
            assert a.shape == b.shape and np.abs(a - b).max() <= 8 and (a != b).mean() < 0.01, key
    # the rows really differ: two samples and two seeds are not collapsed into one result
    assert (batch[0].image - batch[2].image).abs().max() > 1e-3
    if name in ("sdedit", "cfg", "ilvr", "repaint", "blended_latent") or given.get("inversion") == "none":
        assert (batch[0].image - batch[1].image).abs().max() > 1e-4  # seeds differ where noise is drawn


# -- the runner: failure isolation, out of memory, cost per cell, batch size recorded -------------
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
        assert counts["ok"] == 3 * 4 * 2
        runs[size] = read_cells(run_dir).set_index("key").sort_index()
    one, four = runs[1], runs[4]
    assert list(one.index) == list(four.index)
    assert (one.nfe == four.nfe).all() and (four.batch_size > 1).any()
    for metric in ("metric.psnr", "metric.ssim"):
        assert np.allclose(one[metric], four[metric], atol=1e-3, equal_nan=True)


def test_batch_size_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="batch_size = 0"):
        run_config(tmp_path, {"reconstruct": {}}, batch_size=0)
