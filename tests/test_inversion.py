"""Inversions on the tiny untrained backbone: properties that hold for any weights."""

from dataclasses import replace

import pytest
import torch
from diffusers import StableDiffusionPipeline

from bench.data import DatasetSpec, load_dataset
from bench.diffusion.backbone import Backbone, BackboneSpec
from bench.diffusion.inversion.ddim import (
    Inversion,
    NullTextParams,
    ddim_invert,
    optimise_null_text,
    prepare_inversion,
    regenerate,
)
from bench.registry import get_method
from tests.helpers import diffusers_pipeline

STEPS = 10


@pytest.fixture(scope="module")
def samples(backbone):
    return [ref.load(backbone.resolution) for ref in load_dataset(DatasetSpec(name="sample"))]


def mse(a, b):
    return ((a - b) ** 2).mean().item()


def ddim(backbone, sample, steps, w=1.0):
    z0 = backbone.encode_image(sample.image[None])
    cond, null = backbone.encode_text(sample.source_prompt), backbone.encode_text("")
    return z0, Inversion("ddim", ddim_invert(backbone, z0, cond, null, steps, w))


def test_ddim_reconstruction_error_falls_as_steps_grow(backbone, samples):
    for sample in samples[:3]:
        errors = []
        for steps in (10, 50):
            z0, inv = ddim(backbone, sample, steps)
            assert torch.equal(inv.latents[0], z0[0]) and inv.latents.shape[0] == steps + 1
            errors.append(mse(regenerate(backbone, inv, sample.source_prompt, sample.source_prompt, 1.0), z0))
        assert errors[1] < errors[0], (sample.id, errors)


def test_regeneration_equals_diffusers_text_to_image_from_z_T(backbone, samples):
    sample = samples[0]
    _, inv = ddim(backbone, sample, STEPS)
    ours = backbone.decode(regenerate(backbone, inv, sample.source_prompt, sample.target_prompt, 7.5))
    pipe = diffusers_pipeline(StableDiffusionPipeline, backbone, STEPS)
    ref = pipe(sample.target_prompt, latents=inv.z_T, num_inference_steps=STEPS, guidance_scale=7.5, output_type="pt")
    assert (ours - ref.images).abs().max().item() <= 1e-4


def null_text_gain_over_ddim(backbone, sample, nti: NullTextParams) -> tuple[float, float]:
    """(DDIM's, null-text's) round-trip latent MSE of ``sample`` at ``nti.w``, source prompt both ways."""
    z0, inv = ddim(backbone, sample, STEPS)
    cond = backbone.encode_text(sample.source_prompt)
    plain = mse(regenerate(backbone, inv, sample.source_prompt, sample.source_prompt, nti.w), z0)
    nulls, grad_evals = optimise_null_text(backbone, inv.latents, cond, nti)
    assert 0 < grad_evals <= STEPS * nti.inner_steps
    null_text = Inversion("null_text", inv.latents, nulls)
    return plain, mse(regenerate(backbone, null_text, sample.source_prompt, sample.source_prompt, nti.w), z0)


def test_null_text_reconstructs_5x_better_than_ddim_at_w_7_5(backbone, samples):
    """The default run's share of the next test: one bundled image, lr 0.1 (see below why)."""
    plain, optimised = null_text_gain_over_ddim(backbone, samples[0], NullTextParams(w=7.5, lr=0.1))
    assert optimised * 5.0 <= plain, (optimised, plain)


@pytest.mark.slow  # ~2.5 min on 2 idle cores; the test above keeps its 5x property in the default run
def test_null_text_reconstructs_5x_better_than_ddim_at_w_7_5_on_every_bundled_image(backbone, samples):
    # The reference's lr (1e-2) is tuned for trained SD, whose DDIM round trip is nearly exact
    # and needs small corrections. On the untrained tiny UNet, 10 Adam iterations at 1e-2 move
    # each coordinate of the null embedding by at most ~0.1 per step, which closes only part of
    # the gap (ratio 1.6-2.0x at 10 steps, 3.5-4.9x at 50). So the 5x claim is tested at lr 0.1
    # (ratio ~11x), and the reference defaults must still beat DDIM clearly on every image.
    settings = {"lr 0.1": (NullTextParams(w=7.5, lr=0.1), 5.0), "reference": (NullTextParams(w=7.5), 1.4)}
    for sample in samples:
        for name, (nti, factor) in settings.items():
            plain, optimised = null_text_gain_over_ddim(backbone, sample, nti)
            assert optimised * factor <= plain, (sample.id, name, optimised, plain)


def test_null_text_counts_its_work_keeps_no_graph_and_leaves_the_text_cache_alone(backbone, samples):
    sample = samples[1]
    null_before = backbone.encode_text("").clone()
    nti = NullTextParams(inner_steps=3)
    before = backbone.nfe.count
    fresh = replace(sample, source_prompt="a prompt no other test inverts")
    prepared = prepare_inversion(backbone, fresh, "null_text", 4, nti=nti)
    inv, grad_evals = prepared.value, prepared.grad_evals
    nfe = backbone.nfe.count - before
    # pivot: 1 NFE per step; per step: 1 conditional + 1 per inner iteration + 2 for the CFG step
    assert nfe == 4 + 4 * 3 + grad_evals and 0 < grad_evals <= 4 * 3
    assert inv.null_embeddings.dtype == torch.float32 and not inv.null_embeddings.requires_grad
    assert inv.null_embeddings.shape == (4, *null_before.shape[1:])
    assert torch.equal(backbone.encode_text(""), null_before)  # Adam must not update the cached c0 in place
    assert not torch.equal(inv.null_embeddings[0], inv.null_embeddings[-1])  # each step keeps its own embedding


def test_negative_prompt_uses_the_source_embedding_so_any_w_regenerates_like_w_1(backbone, samples):
    sample = samples[2]
    _, inv = ddim(backbone, sample, STEPS)
    negative = Inversion("negative_prompt", inv.latents)
    assert torch.equal(negative.uncond(backbone, sample.source_prompt, 3), backbone.encode_text(sample.source_prompt))
    at_w = regenerate(backbone, negative, sample.source_prompt, sample.source_prompt, 7.5)
    conditional = regenerate(backbone, inv, sample.source_prompt, sample.source_prompt, 1.0)
    assert (at_w - conditional).abs().max().item() <= 1e-4


def test_inversion_methods_regenerate_and_charge_grad_evals_to_the_preparation(backbone, samples):
    sample = samples[3]
    for name, extra in (("ddim_inversion", {}), ("null_text_inversion", {"inner_steps": 2})):
        method = get_method(name)()
        setting = method.resolve({"steps": 4, "w": 7.5, **extra})
        prepared = method.prepare(backbone, sample, setting)
        assert (prepared.grad_evals > 0) == (name == "null_text_inversion" and not prepared.cache_hit)
        first = method.edit(backbone, sample, prepared.value, setting, torch.Generator())
        again = method.edit(backbone, sample, prepared.value, setting, torch.Generator())
        assert torch.equal(first.image, again.image) and first.image.shape == (1, 3, 128, 128)
        assert first.grad_evals == again.grad_evals == 0
        expected = regenerate(backbone, prepared.value, sample.source_prompt, sample.target_prompt, 7.5)
        assert torch.equal(first.image, backbone.decode(expected).float())


def test_null_text_rejects_a_learning_rate_that_reaches_zero():
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="lr_decay"):
        get_method("null_text_inversion").resolve({"steps": 200})


def test_null_text_on_an_fp16_backbone_optimises_an_fp32_embedding(samples):
    half = Backbone(BackboneSpec(dtype="fp16"))
    prepared = prepare_inversion(half, samples[4], "null_text", 3, nti=NullTextParams(inner_steps=2))
    inv = prepared.value
    assert inv.latents.dtype == torch.float16 and inv.null_embeddings.dtype == torch.float32
    assert prepared.grad_evals > 0 and torch.isfinite(inv.null_embeddings).all()
    moved = (inv.null_embeddings - half.encode_text("").float()).abs().amax(dim=(1, 2))
    assert (moved > 0).all()  # gradients reached the embedding at every step (no fp16 underflow to zero)
    latent = regenerate(half, inv, samples[4].source_prompt, samples[4].source_prompt, 7.5)
    assert latent.dtype == torch.float16 and torch.isfinite(latent).all()
