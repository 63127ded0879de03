"""The guided sampling loop: CFG against diffusers and direct UNet sampling, scale 0, the
gradient's path through UNet and decoder, cost counting, and no graph kept across steps."""

import copy
from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionPipeline
from torch.profiler import ProfilerActivity, profile

from bench.data import Sample
from bench.diffusion.backbone import Backbone
from bench.diffusion.guidance import ClassifierGuide, Guide, GuidedEps, guided_sample
from bench.registry import get_method
from tests.helpers import diffusers_pipeline
from tests.test_guidance_nets import FACTORY, tiny_classifier


def run(backbone, name, params, sample, seed=7):
    method = get_method(name)()
    return method.edit(backbone, sample, None, method.resolve(params), torch.Generator().manual_seed(seed))


@pytest.fixture
def sample(image):
    return Sample("x", image, "a photo of a cat", "a photo of a dog", class_label=2)


@pytest.mark.parametrize("w", [7.5, 1.0, 0.0])
def test_cfg_generation_equals_diffusers_text_to_image(backbone, sample, w):
    ours = run(backbone, "cfg", {"w": w, "steps": 6, "t0": 1.0}, sample).image
    pipe = diffusers_pipeline(StableDiffusionPipeline, backbone, 6)
    # guidance_scale <= 1 runs the pipeline without CFG: w = 1 is the prompt alone, w = 0 the empty prompt
    prompt, scale = ("", 1.0) if w == 0 else (sample.target_prompt, w)
    ref = pipe(
        prompt, guidance_scale=scale, num_inference_steps=6, height=backbone.resolution, width=backbone.resolution,
        generator=torch.Generator().manual_seed(7), output_type="pt",
    ).images  # fmt: skip
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("w,prompt", [(1.0, "a photo of a dog"), (0.0, "")])
def test_cfg_w1_is_conditional_and_w0_unconditional_sampling(backbone, sample, w, prompt):
    """Against a hand-written DDIM loop over the UNet with a single text embedding."""
    ours = run(backbone, "cfg", {"w": w, "steps": 5, "t0": 1.0}, sample).image
    scheduler = backbone.new_scheduler(5)
    shape = (1, 4, backbone.latent_size, backbone.latent_size)
    latent = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    text = backbone.encode_text(prompt)
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = backbone.unet(latent, t, encoder_hidden_states=text).sample
            latent = scheduler.step(eps, t, latent, eta=0.0).prev_sample
        direct = backbone.decode(latent)
    assert (ours - direct).abs().max().item() <= 1e-5


def test_cfg_editing_cell_is_sdedit(backbone, sample):
    params = {"w": 3.0, "steps": 10, "t0": 0.6}
    assert torch.equal(run(backbone, "cfg", params, sample).image, run(backbone, "sdedit", params, sample).image)


@pytest.mark.parametrize("t0,w", [(1.0, 0.0), (0.5, 3.0)])
def test_scale_zero_reproduces_the_unguided_sampler(backbone, sample, t0, w):
    common = {"w": w, "steps": 6, "t0": t0}
    unguided = run(backbone, "cfg", common, sample)
    params = {**common, "scale": 0.0, "classifier": FACTORY, "untrained": True}
    guided = run(backbone, "classifier_guidance", params, sample)
    assert torch.equal(guided.image, unguided.image)
    assert guided.grad_evals == 0


class Flat(Guide):
    """A score with zero gradient: guidance at any scale must leave the sampler untouched."""

    def score(self, images, sample, generator):
        return images.sum(dim=(1, 2, 3)) * 0


def test_a_zero_gradient_at_any_scale_reproduces_the_unguided_sampler(backbone, sample):
    """The guided step reuses the prediction it differentiates through, unchanged."""
    setting = {"w": 2.0, "steps": 5, "t0": 1.0}
    unguided = guided_sample(backbone, sample, setting, torch.Generator().manual_seed(3))
    guided = guided_sample(backbone, sample, {**setting, "scale": 1e4}, torch.Generator().manual_seed(3), Flat())
    assert guided.grad_evals == 5
    assert torch.equal(guided.image, unguided.image)


def test_gradient_is_that_of_the_score_of_the_decoded_prediction(backbone):
    """Finite differences (float64) of z_t -> log p(y | D(z0_hat(z_t))) match the guide's
    gradient, which must therefore flow through the UNet as well as the decoder."""
    unet, vae = copy.deepcopy(backbone.unet).double(), copy.deepcopy(backbone.vae).double()
    double = SimpleNamespace(vae=vae, dtype=torch.float64, family=backbone.family)
    double.decode = lambda z: Backbone.decode(double, z)
    text = backbone.encode_text("a dog").double()
    scheduler = backbone.new_scheduler(10)
    t = scheduler.timesteps[3]

    def eps_fn(z, t, index):
        return unet(z, t, encoder_hidden_states=text).sample

    guide = ClassifierGuide(tiny_classifier().double(), "3", untrained=True)
    sample = Sample("x", torch.zeros(3, 8, 8), "")
    guided = GuidedEps(double, scheduler, eps_fn, guide, sample, 1.0, torch.Generator())
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 16, 16, generator=g, dtype=torch.float64)
    direction = torch.randn(z.shape, generator=g, dtype=torch.float64)
    grad, eps = guided.gradient(z, t, 3)

    abar = scheduler.alphas_cumprod[int(t)].double()

    def score(z, eps=None):
        with torch.no_grad():
            eps = eps_fn(z, t, 3) if eps is None else eps
            return guide.score(double.decode((z - (1 - abar).sqrt() * eps) / abar.sqrt()), sample, None).item()

    h = 1e-4
    numeric = (score(z + h * direction) - score(z - h * direction)) / (2 * h)
    decoder_only = (score(z + h * direction, eps) - score(z - h * direction, eps)) / (2 * h)
    assert (grad * direction).sum().item() == pytest.approx(numeric, rel=1e-5)
    assert abs(decoder_only - numeric) > 1e-3 * abs(numeric)  # the UNet's part is not negligible
    assert torch.equal(eps, eps_fn(z, t, 3).detach())


def test_cost_counts_nfe_and_gradient_evaluations(backbone, sample):
    for w, per_step in ((0.0, 1), (4.0, 2)):
        before = backbone.nfe.count
        result = run(backbone, "classifier_guidance",
                     {"scale": 10.0, "w": w, "steps": 8, "t0": 0.5, "classifier": FACTORY, "untrained": True}, sample)
        assert backbone.nfe.count - before == 4 * per_step
        assert result.grad_evals == 4
        assert result.labels == ["untrained classifier (smoke numbers)"]


def cpu_peak_bytes(fn) -> int:
    """Peak of CPU memory allocated by torch while ``fn`` runs (profiler allocation events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def test_no_autograd_graph_is_kept_across_steps(backbone, sample):
    def cell(steps):
        setting = {"scale": 100.0, "w": 2.0, "steps": steps, "t0": 1.0}
        guide = ClassifierGuide(tiny_classifier(), "", untrained=True)
        return lambda: guided_sample(backbone, sample, setting, torch.Generator().manual_seed(0), guide)

    cell(2)()  # warm-up: lazy initialisation inside torch allocates once
    five, twenty = cpu_peak_bytes(cell(5)), cpu_peak_bytes(cell(20))
    unguided_step = cpu_peak_bytes(lambda: run(backbone, "cfg", {"w": 2.0, "steps": 1, "t0": 1.0}, sample))
    one_step_graph = cpu_peak_bytes(cell(1)) - unguided_step
    assert one_step_graph > 0
    assert twenty <= five + 0.5 * one_step_graph, (five, twenty, one_step_graph)
