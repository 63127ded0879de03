"""EDICT and edit-friendly DDPM inversion on the tiny untrained backbone: properties for any weights."""

from dataclasses import replace

import pytest
import torch

from bench import cache
from bench.data import DatasetSpec, load_dataset
from bench.diffusion.inversion.ddim import Inversion
from bench.diffusion.inversion.ddpm import DDPMInversionSpec, ddpm_invert, noise_generator
from bench.diffusion.inversion.edict import EdictInversionSpec, edict_denoise, edict_invert, edict_scheduler
from bench.diffusion.inversion.spec import cache_fields
from bench.errors import ConfigError
from bench.registry import get_method
from methods.ddpm_inversion import regenerate_ddpm
from methods.p2p import build_controller, p2p_latents

TOLERANCE = 1e-4  # max abs error relative to the source latent's max abs value


@pytest.fixture(scope="module")
def sample(backbone):
    return load_dataset(DatasetSpec(name="sample"))[0].load(backbone.resolution)


def relative_error(latent, z0):
    return ((latent.double() - z0.double()).abs().max() / z0.abs().max()).item()


def edict_round_trip(backbone, sample, steps, w):
    z0 = backbone.encode_image(sample.image[None])
    pair = edict_invert(backbone, z0, sample.source_prompt, w, steps, 0.93)
    back = edict_denoise(backbone, pair, sample.source_prompt, w, steps, 0.93)
    return z0, pair, back


def test_edict_round_trip_with_strength_and_leapfrog_returns_the_source_latent(backbone, sample):
    # EDICT_editing's form (PnPInversion's script): 80% of the schedule, leapfrog order.
    z0 = backbone.encode_image(sample.image[None])
    before = backbone.nfe.count
    pair = edict_invert(backbone, z0, sample.source_prompt, 1.0, 10, 0.93, strength=0.8, leapfrog=True)
    assert backbone.nfe.count - before == 2 * 8
    back = edict_denoise(backbone, pair, sample.source_prompt, 1.0, 10, 0.93, strength=0.8, leapfrog=True)
    assert relative_error(back[:1], z0) <= TOLERANCE and relative_error(back[1:], z0) <= TOLERANCE
    fixed_order = edict_denoise(backbone, pair, sample.source_prompt, 1.0, 10, 0.93, strength=0.8)
    assert relative_error(fixed_order[:1], z0) > 10 * TOLERANCE  # the order matters: leapfrog is not a no-op


def test_edict_own_scheduler_is_edict_editings_offset_zero_schedule_and_still_exact(backbone, sample):
    # EDICT_editing builds its own DDIM scheduler (steps_offset 0); SD 1.x's config (and tiny's) says 1.
    assert edict_scheduler(backbone, 10).timesteps.tolist() == list(range(901, 0, -100))
    assert edict_scheduler(backbone, 10, own_scheduler=True).timesteps.tolist() == list(range(900, -1, -100))
    z0 = backbone.encode_image(sample.image[None])
    pair = edict_invert(backbone, z0, sample.source_prompt, 1.0, 10, 0.93, strength=0.8, leapfrog=True, own_scheduler=True)
    back = edict_denoise(backbone, pair, sample.source_prompt, 1.0, 10, 0.93, strength=0.8, leapfrog=True, own_scheduler=True)
    assert relative_error(back[:1], z0) <= TOLERANCE
    other = edict_invert(backbone, z0, sample.source_prompt, 1.0, 10, 0.93, strength=0.8, leapfrog=True)
    assert relative_error(other, pair) > 10 * TOLERANCE


def ddpm_round_trip(backbone, sample, steps, w):
    z0 = backbone.encode_image(sample.image[None])
    latents, noise_maps = ddpm_invert(backbone, z0, sample.source_prompt, w, steps, noise_generator(sample, 0))
    return z0, regenerate_ddpm(backbone, Inversion("ddpm", latents, noise_maps=noise_maps), sample.source_prompt, w)


def test_edict_round_trip_returns_the_source_latent_at_10_steps(backbone, sample):
    before = backbone.nfe.count
    z0, pair, back = edict_round_trip(backbone, sample, 10, 1.0)
    assert backbone.nfe.count - before == 2 * 2 * 10  # x and y each step, inversion and denoising
    assert pair.dtype == torch.float64 and pair.shape[0] == 2
    assert relative_error(pair[:1], z0) > 1  # z_T is far from the source: the round trip is not trivial
    assert relative_error(back[:1], z0) <= TOLERANCE and relative_error(back[1:], z0) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("steps", [10, 50])
def test_edict_round_trip_under_guidance(backbone, sample, steps):
    _, _, back = edict_round_trip(backbone, sample, steps, 3.0)
    z0 = backbone.encode_image(sample.image[None])
    assert relative_error(back[:1], z0) <= TOLERANCE and relative_error(back[1:], z0) <= TOLERANCE


def test_ddpm_round_trip_with_the_stored_noise_maps_returns_the_source_latent(backbone, sample):
    z0, back = ddpm_round_trip(backbone, sample, 10, 3.5)
    assert relative_error(back, z0) <= TOLERANCE


@pytest.mark.slow
def test_ddpm_round_trip_at_50_steps(backbone, sample):
    z0, back = ddpm_round_trip(backbone, sample, 50, 3.5)
    assert relative_error(back, z0) <= TOLERANCE


def test_ddpm_noisy_latents_are_drawn_independently_and_follow_the_noise_seed(backbone, sample):
    z0 = backbone.encode_image(sample.image[None])
    a, maps_a = ddpm_invert(backbone, z0, sample.source_prompt, 1.0, 3, noise_generator(sample, 0))
    b, maps_b = ddpm_invert(backbone, z0, sample.source_prompt, 1.0, 3, noise_generator(sample, 0))
    c, _ = ddpm_invert(backbone, z0, sample.source_prompt, 1.0, 3, noise_generator(sample, 1))
    assert torch.equal(a, b) and torch.equal(maps_a, maps_b) and not torch.equal(a[-1], c[-1])
    # independent draws: the noise in x_T is not the noise in the next latent (as it would be in DDIM inversion)
    scheduler = backbone.new_scheduler(3)
    abar = scheduler.alphas_cumprod[scheduler.timesteps[:2]]
    n_T, n_next = ((a[[-1, -2]] - abar.sqrt()[:, None, None, None] * z0) / (1 - abar).sqrt()[:, None, None, None])
    assert torch.corrcoef(torch.stack([n_T.flatten(), n_next.flatten()]))[0, 1].abs() < 0.2


def test_exact_inversions_are_cached_on_disk_under_their_parameters(backbone, sample):
    fresh = replace(sample, source_prompt="a prompt only the cache test inverts")
    first = EdictInversionSpec(2, 1.0, 0.93).prepare(backbone, fresh)
    again = EdictInversionSpec(2, 1.0, 0.93).prepare(backbone, fresh)
    assert not first.cache_hit and again.cache_hit and torch.equal(first.value, again.value)
    assert cache.load(cache_fields(backbone, fresh, 2, "edict", {"inversion_w": 1.0, "p": 0.9})) is None
    first = DDPMInversionSpec(2, 1.0, 0).prepare(backbone, fresh)
    again = DDPMInversionSpec(2, 1.0, 0).prepare(backbone, fresh)
    assert not first.cache_hit and again.cache_hit
    assert torch.equal(first.value.noise_maps, again.value.noise_maps) and again.value.kind == "ddpm"
    assert not DDPMInversionSpec(2, 1.0, 1).prepare(backbone, fresh).cache_hit  # noise_seed is part of the key


def test_p2p_over_ddpm_with_the_source_as_target_reproduces_the_source(backbone, sample):
    same = replace(sample, target_prompt=sample.source_prompt)
    method = get_method("p2p")()
    setting = method.resolve({"steps": 4, "inversion": "ddpm", "w": 1.0, "inversion_w": 1.0, "blend_words": "none"})
    prep = method.prepare(backbone, same, setting).value
    z0 = backbone.encode_image(same.image[None])
    latents = p2p_latents(
        backbone, prep.z_T, (same.source_prompt, same.target_prompt), 1.0, build_controller(backbone, same, setting),
        4, lambda index: backbone.encode_text(""), noise_maps=prep.noise_maps,
    )  # fmt: skip
    assert relative_error(latents[:1], z0) <= TOLERANCE and relative_error(latents[1:], z0) <= TOLERANCE
    assert method.preparation_key(setting) == DDPMInversionSpec(steps=4, inversion_w=1.0, noise_seed=0)


def test_exact_inversion_methods_validate_their_parameters():
    with pytest.raises(ConfigError, match="skip = 4 with steps = 4 runs no step"):
        get_method("ddpm_inversion").resolve({"steps": 4, "skip": 4})
    with pytest.raises(ConfigError, match="parameter 'p' = 0.3"):
        get_method("edict").resolve({"p": 0.3})
