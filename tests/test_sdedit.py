import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from bench.data import Sample
from bench.errors import ConfigError
from bench.registry import get_method
from tests.helpers import diffusers_pipeline


@pytest.mark.parametrize("t0,w,steps", [(0.5, 7.5, 10), (1.0, 1.0, 6), (0.3, 3.0, 20), (0.8, 0.0, 5)])
def test_sdedit_equals_diffusers_img2img(backbone, image, t0, w, steps):
    method = get_method("sdedit")()
    setting = method.resolve({"t0": t0, "w": w, "steps": steps})
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    ours = method.edit(backbone, sample, None, setting, torch.Generator().manual_seed(7)).image

    pipe = diffusers_pipeline(StableDiffusionImg2ImgPipeline, backbone, steps)
    # The pipeline samples the VAE posterior; editbench uses its mean. Feed the same source latent.
    source = backbone.encode_image(image[None])
    kwargs = dict(image=source, strength=t0, num_inference_steps=steps, output_type="pt")
    if w == 0:  # the pipeline has no unconditional mode: an empty prompt without CFG is the same thing
        ref = pipe("", guidance_scale=1.0, generator=torch.Generator().manual_seed(7), **kwargs).images
    else:
        ref = pipe("a photo of a dog", guidance_scale=w, generator=torch.Generator().manual_seed(7), **kwargs).images
    assert (ours - ref).abs().max().item() <= 1e-4


def test_sdedit_nfe_is_steps_times_t0_times_cfg_batch(backbone, image):
    method = get_method("sdedit")()
    sample = Sample("x", image, "a cat", "a dog")
    for w, per_step in ((7.5, 2), (1.0, 1)):
        before = backbone.nfe.count
        method.edit(backbone, sample, None, method.resolve({"t0": 0.5, "w": w, "steps": 10}), torch.Generator())
        assert backbone.nfe.count - before == 5 * per_step


def test_sdedit_rejects_a_setting_that_runs_no_step():
    with pytest.raises(ConfigError, match="int\\(steps \\* t0\\) >= 1"):
        get_method("sdedit").resolve({"t0": 0.05, "steps": 10})

