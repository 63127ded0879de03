"""``rf_inversion`` on the tiny untrained SD3 backbone: properties that hold for any weights (gamma = 0
is flow inversion, eta = 0 is plain regeneration, gamma = 1 and eta = 1 follow straight lines), the
disk cache of the controlled inversion, batching and NFE accounting."""

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from bench.data import Sample
from bench.diffusion.inversion.ddim import Inversion, regenerate_rows
from bench.diffusion.inversion.ddpm import noise_generator
from bench.errors import ConfigError
from bench.method import EditRow
from bench.registry import get_method
from tests.helpers import cell_rows

STEPS = 5
#: Batched kernels differ from single-row ones by float noise (tests/test_conformance.py explains it).
IMAGE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def samples():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(2, 3, 8, 8, generator=g)
    images = torch.nn.functional.interpolate(low, size=128, mode="bilinear", align_corners=False)
    return [Sample("cat", images[0], "a photo of a cat", "a photo of a dog"),
            Sample("car", images[1], "a red car in the street", "a blue car in an old street")]  # fmt: skip


def setting_of(**given):
    return get_method("rf_inversion").resolve({"steps": STEPS, **given})


def prepared(sd3, sample, **given):
    return get_method("rf_inversion")().prepare(sd3, sample, setting_of(**given))


def edit(sd3, sample, inversion, **given):
    return get_method("rf_inversion")().edit(sd3, sample, inversion, setting_of(**given), torch.Generator()).image


@pytest.mark.parametrize("inversion_w", [0.0, 1.0, 2.5])
def test_gamma_zero_inverts_exactly_like_flow_inversion(sd3, samples, inversion_w):
    flow = get_method("flow_inversion")()
    expected = flow.prepare(sd3, samples[0], flow.resolve({"steps": STEPS, "inversion_w": inversion_w})).value.latents
    assert torch.equal(prepared(sd3, samples[0], gamma=0.0, inversion_w=inversion_w).value.latents, expected)
    assert not torch.equal(prepared(sd3, samples[0], gamma=0.3, inversion_w=inversion_w).value.latents, expected)


def test_gamma_one_follows_the_straight_line_to_the_noise_sample(sd3, samples):
    """With the network's velocity mixed out, every step lands on ``(1 - s) z0 + s y1``, ending at ``y1``."""
    sample = samples[0]
    latents = prepared(sd3, sample, gamma=1.0, noise_seed=3).value.latents
    z0 = sd3.encode_image(sample.image[None])
    y1 = randn_tensor(z0.shape, generator=noise_generator(sample, 3), dtype=z0.dtype)
    sigmas = sd3.new_scheduler(STEPS).sigmas
    for k in range(STEPS + 1):
        s = sigmas[STEPS - k]
        torch.testing.assert_close(latents[k : k + 1], (1 - s) * z0 + s * y1, atol=1e-5, rtol=1e-5)


def test_eta_zero_regenerates_exactly_like_flow_inversion(sd3, samples):
    sample = samples[0]
    inversion = prepared(sd3, sample, gamma=0.5).value
    row = EditRow(sample, Inversion("flow", inversion.latents), torch.Generator())
    (expected,) = regenerate_rows(sd3, [row], 3.5)
    assert torch.equal(edit(sd3, sample, inversion, eta=0.0), expected.image)
    assert not torch.equal(edit(sd3, sample, inversion, eta=0.5), expected.image)


def test_gamma_and_eta_zero_are_flow_inversion_end_to_end(sd3, samples):
    sample, given = samples[1], {"steps": STEPS, "inversion_w": 1.0, "w": 4.0}
    flow = get_method("flow_inversion")()
    flow_setting = flow.resolve(given)
    expected = flow.edit(
        sd3, sample, flow.prepare(sd3, sample, flow_setting).value, flow_setting, torch.Generator()
    ).image
    inversion = prepared(sd3, sample, gamma=0.0, inversion_w=1.0).value
    assert torch.equal(edit(sd3, sample, inversion, eta=0.0, inversion_w=1.0, w=4.0), expected)


def test_eta_one_over_every_step_returns_to_the_source_latent(sd3, samples):
    """The straight path back to ``z0`` alone: each step scales ``z - z0`` by ``s_{i+1} / s_i``, the last by 0."""
    from bench.diffusion.inversion.rf import rf_regenerate

    sample = samples[0]
    inversion = prepared(sd3, sample).value
    latent = rf_regenerate(sd3, [inversion], [sample.target_prompt], 7.5, eta=1.0, start=0, stop=STEPS)
    torch.testing.assert_close(latent, inversion.latents[:1], atol=1e-5, rtol=1e-5)


def test_the_controlled_inversion_is_cached_under_gamma_and_the_noise_seed(sd3, samples):
    method = get_method("rf_inversion")()
    sample = Sample("cached", samples[0].image, "a cat", "a dog")
    setting = setting_of(gamma=0.7, noise_seed=11, inversion_w=2.0)
    before = sd3.nfe.count
    first = method.prepare(sd3, sample, setting)
    assert not first.cache_hit and sd3.nfe.count - before == method.estimate_nfe(setting)[1] == STEPS * 2
    assert method.preparation(setting).is_cached(sd3, sample)
    before = sd3.nfe.count
    second = method.prepare(sd3, sample, setting)
    assert second.cache_hit and sd3.nfe.count == before and torch.equal(first.value.latents, second.value.latents)
    for other in ({"gamma": 0.6}, {"noise_seed": 12}):
        changed = {**setting, **other}
        assert not method.preparation(changed).is_cached(sd3, sample)
        third = method.prepare(sd3, sample, changed)
        assert not third.cache_hit and not torch.equal(third.value.latents, first.value.latents)
    # the editing parameters share the inversion
    assert method.preparation_key(setting) == method.preparation_key({**setting, "eta": 0.1, "w": 9.0, "stop": 0.8})


@pytest.mark.parametrize("given", [{}, {"eta": 0.4, "start": 0.2, "stop": 1.0, "w": 1.0}])
def test_a_batch_equals_its_cells_run_alone_and_nfe_is_the_estimate(sd3, samples, given):
    method = get_method("rf_inversion")()
    setting = setting_of(**given)
    preps = {s.id: method.prepare(sd3, s, setting).value for s in samples}

    def rows():
        return cell_rows(samples, preps)

    before = sd3.nfe.count
    batch = method.edit_batch(sd3, rows(), setting)
    assert sd3.nfe.count - before == 4 * method.estimate_nfe(setting)[0]
    for row, together in zip(rows(), batch):
        before = sd3.nfe.count
        (alone,) = method.edit_batch(sd3, [row], setting)
        assert sd3.nfe.count - before == method.estimate_nfe(setting)[0]
        assert (together.image - alone.image).abs().max().item() <= IMAGE_TOLERANCE
    assert (batch[0].image - batch[2].image).abs().max() > 1e-3  # two samples
    assert (batch[0].image - batch[1].image).abs().max() <= IMAGE_TOLERANCE  # the edit draws no noise: seeds agree


def test_the_controller_window_is_whole_steps_and_must_be_ordered():
    method = get_method("rf_inversion")
    assert method.effective_setting(method.resolve({"start": 0.1, "stop": 0.25}))["stop"] == 7  # int(28 * 0.25)
    with pytest.raises(ConfigError, match="start = 0.5 > stop = 0.25; need start <= stop"):
        method.resolve({"start": 0.5})
    assert method.families == ("sd3", "flux") and method.resolve({})["gamma"] == 0.5


def test_a_run_records_the_nfe_the_dry_run_estimates_and_reuses_the_inversion(tmp_path):
    from bench.execution.plan import dry_run_text
    from bench.execution.runner import start_run
    from bench.reporting.aggregate import load_run
    from bench.reporting.report import provenance
    from tests.helpers import read_cells, run_config

    config = run_config(tmp_path, {"rf_inversion": {"steps": 3, "gamma": 0.45, "eta": [0.0, 0.9]}},
                        backbone={"name": "tiny-sd3"})  # fmt: skip
    text = dry_run_text(config).splitlines()
    assert "rf_inversion | eta=0.9 | 2 | 0 | 3 | 6" in text
    # one inversion per sample (both etas share it): 2 samples x 3 steps at inversion_w 0
    assert any(line.startswith("preparations (inversions): 2 (rf_inversion: 2); ") and line.endswith("up to 6 NFE if all are computed")
               for line in text)  # fmt: skip
    run_dir, counts = start_run(config, progress=False)
    cells = read_cells(run_dir)
    assert counts["ok"] == 4 and (cells["status"] == "ok").all(), cells["error"].dropna().tolist()
    assert (cells["nfe"] == 6).all()
    computed = cells[cells["prep_nfe"] > 0]
    assert len(computed) == 2 and (computed["prep_nfe"] == 3).all()  # one inversion per sample, shared by both etas
    # the provenance names the sampler the family ran, not the SD default of the backbone spec
    assert dict(provenance(load_run(run_dir)))["backbone"].endswith("fp32, flow_match_euler scheduler, 128 px")


def test_one_step_is_the_mix_of_the_network_and_the_straight_path(sd3, samples):
    """Over one step each ODE is linear in its controller strength, so any strength is the mix of
    strengths 0 (the network's velocity) and 1 (the straight path) with the same weights."""
    from bench.diffusion.inversion.rf import rf_regenerate

    sample = samples[1]
    ends = {g: prepared(sd3, sample, steps=1, gamma=g).value for g in (0.0, 0.3, 1.0)}
    mixed = 0.7 * ends[0.0].latents[-1] + 0.3 * ends[1.0].latents[-1]
    torch.testing.assert_close(ends[0.3].latents[-1], mixed, atol=1e-5, rtol=1e-5)
    inversion = ends[0.3]
    regenerated = {e: rf_regenerate(sd3, [inversion], [sample.target_prompt], 3.5, e, 0, 1) for e in (0.0, 0.6, 1.0)}
    torch.testing.assert_close(regenerated[0.6], 0.4 * regenerated[0.0] + 0.6 * regenerated[1.0], atol=1e-5, rtol=1e-5)
