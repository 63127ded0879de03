"""ControlNet and T2I-Adapter against diffusers' pipelines over the same components (untrained
networks with random zero-convolutions, so control visibly changes the output)."""

import numpy as np
import pytest
import torch
from diffusers import (
    StableDiffusionAdapterPipeline,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
)

from bench.data import Sample
from bench.diffusion.control import as_picture, condition_map, with_channels
from bench.diffusion.extra_networks import load_network
from bench.errors import ConfigError
from bench.registry import get_method
from tests.helpers import diffusers_pipeline


@pytest.fixture
def sample(image):
    return Sample("x", image, "a photo of a cat", "a photo of a dog")


def run(name, backbone, sample, seed=7, **params):
    method = get_method(name)()
    setting = method.resolve({"untrained": True, **params})
    method.check_backbone(setting, backbone)
    prep = method.prepare(backbone, sample, setting).value
    return method.edit(backbone, sample, prep, setting, torch.Generator().manual_seed(seed))


def cfg(backbone, sample, seed, **settings):
    """The plain ``cfg`` cell at the same settings: what a control weight of 0 must equal."""
    method = get_method("cfg")()
    return method.edit(backbone, sample, None, method.resolve(settings), torch.Generator().manual_seed(seed)).image


def control_image(backbone, sample, condition="canny"):
    setting = get_method("controlnet").resolve({"condition": condition, "untrained": True})
    return with_channels(condition_map(sample.image, setting, backbone), 3)[None]


@pytest.mark.parametrize("condition,scale,start,end,w,steps", [
    ("canny", 1.0, 0.0, 1.0, 7.5, 3), ("grey", 0.5, 0.25, 0.75, 1.0, 4), ("pose", 2.0, 0.0, 1.0, 7.5, 2),
])  # fmt: skip
def test_controlnet_from_noise_equals_diffusers(backbone, sample, condition, scale, start, end, w, steps):
    ours = run("controlnet", backbone, sample, condition=condition, conditioning_scale=scale, control_start=start,
               control_end=end, w=w, steps=steps, t0=1.0)  # fmt: skip
    controlnet = load_network(backbone, "controlnet", "", untrained=True).model
    pipe = diffusers_pipeline(StableDiffusionControlNetPipeline, backbone, steps, controlnet=controlnet,
                              image_encoder=None)  # fmt: skip
    ref = pipe("a photo of a dog", image=control_image(backbone, sample, condition), num_inference_steps=steps,
               guidance_scale=w, controlnet_conditioning_scale=scale, control_guidance_start=start,
               control_guidance_end=end, generator=torch.Generator().manual_seed(7),
               output_type="pt").images  # fmt: skip
    assert (ours.image - ref).abs().max().item() <= 1e-4


def test_controlnet_from_the_source_equals_diffusers_img2img(backbone, sample):
    t0, scale, end = 0.5, 1.5, 0.7
    ours = run("controlnet", backbone, sample, condition="blur", conditioning_scale=scale, control_end=end, w=7.5,
               steps=8, t0=t0)  # fmt: skip
    controlnet = load_network(backbone, "controlnet", "", untrained=True).model
    pipe = diffusers_pipeline(StableDiffusionControlNetImg2ImgPipeline, backbone, 8, controlnet=controlnet,
                              image_encoder=None)  # fmt: skip
    # As in the SDEdit test: the pipeline samples the VAE posterior, editbench uses its mean.
    source = backbone.encode_image(sample.image[None])
    ref = pipe("a photo of a dog", image=source, control_image=control_image(backbone, sample, "blur"), strength=t0,
               num_inference_steps=8, guidance_scale=7.5, controlnet_conditioning_scale=scale, control_guidance_end=end,
               generator=torch.Generator().manual_seed(7), output_type="pt").images  # fmt: skip
    assert (ours.image - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("t0", [1.0, 0.5])
def test_controlnet_at_scale_zero_is_cfg_and_control_changes_the_output(backbone, sample, t0):
    settings = dict(w=5.0, steps=4, t0=t0)
    plain = cfg(backbone, sample, 7, **settings)
    assert torch.equal(run("controlnet", backbone, sample, conditioning_scale=0.0, **settings).image, plain)
    assert (run("controlnet", backbone, sample, conditioning_scale=1.0, **settings).image - plain).abs().max() > 1e-3


@pytest.mark.parametrize("condition,scale,w", [("canny", 1.0, 7.5), ("blur", 0.7, 1.0), ("depth", 1.0, 7.5),
                                               ("segmentation", 1.0, 7.5)])
def test_t2i_adapter_equals_diffusers(backbone, sample, condition, scale, w):
    ours = run("t2i_adapter", backbone, sample, condition=condition, adapter_scale=scale, w=w, steps=3, t0=1.0)
    adapter = load_network(backbone, "t2i_adapter", "", untrained=True).model
    pipe = diffusers_pipeline(StableDiffusionAdapterPipeline, backbone, 3, adapter=adapter)
    ref = pipe("a photo of a dog", image=control_image(backbone, sample, condition), num_inference_steps=3,
               guidance_scale=w, adapter_conditioning_scale=scale, generator=torch.Generator().manual_seed(7),
               output_type="np").images  # fmt: skip
    ref = torch.from_numpy(ref).permute(0, 3, 1, 2)  # this pipeline returns arrays whatever output_type says
    assert (ours.image - ref).abs().max().item() <= 1e-4


def test_t2i_adapter_at_scale_zero_is_plain_generation(backbone, sample):
    settings = dict(w=7.5, steps=3, t0=1.0)
    plain = cfg(backbone, sample, 3, **settings)
    assert torch.equal(run("t2i_adapter", backbone, sample, seed=3, adapter_scale=0.0, **settings).image, plain)
    controlled = run("t2i_adapter", backbone, sample, seed=3, adapter_scale=1.0, **settings).image
    assert (controlled - plain).abs().max() > 1e-3


def test_controlled_cells_save_the_condition_map_and_carry_the_untrained_label(backbone, sample):
    result = run("controlnet", backbone, sample, steps=2, condition="canny")
    assert result.labels == ["untrained ControlNet (smoke numbers)"]
    picture = result.artifacts["condition"]
    assert picture.size == (128, 128) and set(np.unique(np.asarray(picture))) <= {0, 255}


def test_condition_maps():
    g = torch.Generator().manual_seed(0)
    image = torch.zeros(3, 64, 64)
    image[:, 16:48, 16:48] = 1  # a white square: edges on its border only
    canny = condition_map(image, get_method("controlnet").resolve({"condition": "canny"}))
    assert canny.shape == (1, 64, 64) and canny[0, 30:34, 30:34].sum() == 0 and canny[0, 14:18, 20:44].sum() > 0
    noisy = torch.rand(3, 64, 64, generator=g)
    grey = condition_map(noisy, get_method("controlnet").resolve({"condition": "grey"}))
    assert torch.allclose(grey, with_channels(noisy, 1), atol=1e-6)
    blur = condition_map(noisy, get_method("controlnet").resolve({"condition": "blur", "blur_sigma": 2.0}))
    assert blur.shape == (3, 64, 64) and blur.std() < noisy.std() / 3
    assert as_picture(blur).size == (64, 64)


def test_control_settings_are_validated():
    with pytest.raises(ConfigError, match="control_start = 0.8 is after control_end = 0.2"):
        get_method("controlnet").resolve({"control_start": 0.8, "control_end": 0.2})
    with pytest.raises(ConfigError, match="canny_low = 0.5 exceeds canny_high = 0.2"):
        get_method("t2i_adapter").resolve({"canny_low": 0.5})
    with pytest.raises(ConfigError, match="'condition' = 'normal' is not allowed; expected one of 'canny', 'grey'"):
        get_method("controlnet").resolve({"condition": "normal"})


def test_the_control_config_sweeps_the_three_control_weights_with_untrained_networks():
    from bench.execution.config import load_config
    from bench.paths import repo_root

    config = load_config(repo_root() / "configs" / "control.yaml")
    sweeps = {"controlnet": "conditioning_scale", "t2i_adapter": "adapter_scale", "instruct_pix2pix": "image_w"}
    for method, param in sweeps.items():
        settings = config.settings[method]
        assert len({s[param] for s in settings}) >= 3 and all(s["untrained"] for s in settings)
