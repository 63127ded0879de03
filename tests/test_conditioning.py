"""ILVR, RePaint and Blended Latent Diffusion: properties that hold for any weights."""

import pytest
import torch
import torch.nn.functional as F

from bench.data import Sample
from bench.diffusion.masks import latent_mask
from bench.diffusion.sampling import denoise, text_guided_eps
from bench.errors import ConfigError
from bench.execution.config import build_config
from bench.execution.runner import start_run
from bench.method import EditRow
from bench.registry import get_method
from bench.store import Store
from methods.ilvr import LowPass
from tests.helpers import write_dataset

STEPS = 8


@pytest.fixture
def sample(image):
    mask = torch.zeros(1, 128, 128)
    mask[:, 30:90, 20:75] = 1
    return Sample("s", image, "a photo of a cat", "a photo of a dog", mask=mask)


def run(method_name, backbone, sample, seed=0, **given):
    """Final latent, and per step (latent, reference) as the method saw them."""
    method = get_method(method_name)()
    setting = method.resolve({"steps": STEPS, **given})
    trace = []
    rows = [EditRow(sample, None, torch.Generator().manual_seed(seed))]
    final = method.latents(backbone, rows, setting, lambda *a: trace.append(a))
    return final, trace, setting


# -- the latent-mask rule ---------------------------------------------------------------------
def test_latent_mask_never_shrinks_the_edit_region():
    mask = torch.zeros(1, 64, 64)
    mask[0, 9, 17] = 1  # one pixel
    mask[0, 40:47, 3:30] = 1
    lat = latent_mask(mask, 8)
    assert lat.shape == (1, 1, 8, 8) and lat[0, 0, 1, 2] == 1 and lat.sum() == 1 + 4  # rows 40-46 lie in latent row 5
    covered = F.interpolate(lat, scale_factor=8, mode="nearest")[0]
    assert (covered >= mask).all()
    grown = latent_mask(mask, 8, dilation=1)
    assert (grown >= lat).all() and grown[0, 0, 0, 1] == 1 and grown[0, 0, 3, 3] == 0


# -- ILVR -------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1, 2, 4, 8, 16])
def test_low_pass_is_a_projection(factor):
    z = torch.randn(2, 4, 16, 16, dtype=torch.float64)
    phi = LowPass(16, 16, factor, "cpu", torch.float64)
    torch.testing.assert_close(phi(phi(z)), phi(z))
    if factor == 1:
        torch.testing.assert_close(phi(z), z)
    if factor == 16:  # one coefficient per channel: a constant image
        assert phi(z).std(dim=(-2, -1)).max() < 1e-10


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_ilvr_conditioned_steps_share_the_reference_low_pass(backbone, sample, factor):
    final, trace, _ = run("ilvr", backbone, sample, N=factor, cond_stop=1.0, w=3.0)
    phi = LowPass(16, 16, factor, "cpu", torch.float32)
    assert len(trace) == STEPS
    for step, latent, y in trace:
        assert (phi(latent) - phi(y)).abs().max() <= 1e-5


def test_ilvr_factor_one_over_the_whole_range_ends_on_the_source(backbone, sample):
    final, trace, _ = run("ilvr", backbone, sample, N=1, cond_stop=1.0)
    source = backbone.encode_image(sample.image[None])
    assert trace[-1][2] is not None and torch.equal(trace[-1][2], source)  # the last reference is clean
    torch.testing.assert_close(final, source, atol=1e-6, rtol=0)


def test_ilvr_steps_after_cond_stop_are_plain_denoising(backbone, sample):
    final, trace, setting = run("ilvr", backbone, sample, N=4, cond_stop=0.5, w=5.0)
    conditioned = int(STEPS * 0.5)
    assert all(y is not None for _, _, y in trace[:conditioned]) and all(y is None for _, _, y in trace[conditioned:])
    scheduler = backbone.new_scheduler(STEPS)
    eps = text_guided_eps(backbone, sample.target_prompt, setting["w"])
    with torch.no_grad():
        plain = denoise(scheduler, trace[conditioned - 1][1], scheduler.timesteps[conditioned:], eps)
    torch.testing.assert_close(final, plain, atol=1e-5, rtol=0)


def test_ilvr_factor_validation(backbone):
    with pytest.raises(ConfigError, match=r"'N' = 3 is not allowed; expected a power of two"):
        get_method("ilvr").resolve({"N": 3})
    setting = get_method("ilvr").resolve({"N": 32})
    with pytest.raises(ConfigError, match=r"'N' = 32 does not divide the latent size 16; allowed: 1, 2, 4, 8, 16"):
        get_method("ilvr").check_backbone(setting, backbone)


# -- RePaint and Blended ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method_name,given",
    [("repaint", {"r": 2, "j": 1}), ("repaint", {"r": 3, "j": 3}), ("blended_latent", {"t0": 0.75, "dilation": 1})],
)
def test_outside_the_mask_the_latent_is_the_noised_source(backbone, sample, method_name, given):
    final, trace, setting = run(method_name, backbone, sample, w=4.0, **given)
    edit = latent_mask(sample.mask, 8, setting.get("dilation", 0))
    keep = edit == 0
    assert keep.any() and (~keep).any()
    for step, latent, reference in trace:
        assert torch.equal(latent[keep.expand_as(latent)], reference[keep.expand_as(reference)])
    source = backbone.encode_image(sample.image[None])
    assert torch.equal(final[keep.expand_as(final)], source[keep.expand_as(source)])
    assert not torch.allclose(final[~keep.expand_as(final)], source[~keep.expand_as(source)])


@pytest.mark.parametrize("j", [1, 2])
def test_repaint_resampling_costs_r_times_the_nfe(backbone, sample, j):
    counts = {}
    for r in (1, 3):
        before = backbone.nfe.count
        _, trace, _ = run("repaint", backbone, sample, r=r, j=j, w=4.0)
        counts[r] = backbone.nfe.count - before
        assert len(trace) == r * STEPS
    assert counts[1] == 2 * STEPS and counts[3] == 3 * counts[1]


def test_blended_paste_keeps_source_pixels_outside_the_mask(backbone, sample):
    method = get_method("blended_latent")()
    setting = method.resolve({"steps": STEPS, "paste_source": True})
    image = method.edit(backbone, sample, None, setting, torch.Generator().manual_seed(0)).image
    outside = (sample.mask == 0).expand(3, -1, -1)[None]
    assert torch.equal(image[outside], sample.image[None][outside])


def test_masked_methods_skip_samples_without_a_mask(tmp_path):
    data = write_dataset(tmp_path / "data", n=1, extra=[{"id": "nomask", "image": "img0.png", "source_prompt": "a",
                                                         "target_prompt": "b"}])  # fmt: skip
    config = build_config({
        "dataset": {"name": None, "path": data}, "output": str(tmp_path / "runs"),
        "methods": {"repaint": {"steps": 2, "r": 1}, "blended_latent": {"steps": 2}, "ilvr": {"steps": 2}},
    })  # fmt: skip
    run_dir, counts = start_run(config, progress=False)
    store = Store(run_dir)
    cells = store.cells_frame()
    store.close()
    skipped = cells[cells.status == "skipped"]
    assert set(zip(skipped.sample_id, skipped.method)) == {("nomask", "repaint"), ("nomask", "blended_latent")}
    assert skipped.error.str.contains("sample lacks mask").all()
    assert counts["ok"] == 4 and counts["failed"] == 0


def test_ilvr_factor_not_dividing_the_latent_fails_before_any_cell(tmp_path):
    config = build_config({"dataset": {"name": None, "path": write_dataset(tmp_path / "d", n=1)},
                           "output": str(tmp_path / "runs"), "methods": {"ilvr": {"N": 32, "steps": 2}}})  # fmt: skip
    with pytest.raises(ConfigError, match="does not divide the latent size"):
        start_run(config, progress=False)
    assert not any((tmp_path / "runs").iterdir())
