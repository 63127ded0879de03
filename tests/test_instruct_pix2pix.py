"""InstructPix2Pix against diffusers' pipeline over the same components (an untrained 8-channel UNet)."""

import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

from bench.data import Sample
from bench.diffusion.extra_networks import load_network
from bench.registry import get_method
from tests.helpers import diffusers_pipeline


def edit(backbone, sample, seed=7, **params):
    method = get_method("instruct_pix2pix")()
    setting = method.resolve({"untrained": True, **params})
    method.check_backbone(setting, backbone)
    return method.edit(backbone, sample, None, setting, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("w,image_w,steps", [(7.5, 1.5, 3), (3.0, 1.0, 2)])
def test_instruct_pix2pix_equals_diffusers(backbone, image, w, image_w, steps):
    sample = Sample("x", image, "a photo of a cat", instruction="turn the cat into a dog")
    before = backbone.nfe.count
    ours = edit(backbone, sample, w=w, image_w=image_w, steps=steps)
    assert backbone.nfe.count - before == 3 * steps  # its own UNet counts, three latents per step
    assert ours.labels == ["untrained InstructPix2Pix UNet (smoke numbers)"]
    unet = load_network(backbone, "instruct_pix2pix", "", untrained=True).model
    pipe = diffusers_pipeline(StableDiffusionInstructPix2PixPipeline, backbone, steps, unet=unet, image_encoder=None)
    ref = pipe("turn the cat into a dog", image=image[None], num_inference_steps=steps, guidance_scale=w,
               image_guidance_scale=image_w, generator=torch.Generator().manual_seed(7),
               output_type="pt").images  # fmt: skip
    assert (ours.image - ref).abs().max().item() <= 1e-4


def test_instruct_pix2pix_without_guidance_is_one_conditional_pass(backbone, image):
    """``w = image_w = 1`` collapses the three-way formula to the conditional prediction."""
    sample = Sample("x", image, "a photo of a cat", instruction="make it a watercolor")
    before = backbone.nfe.count
    ours = edit(backbone, sample, w=1.0, image_w=1.0, steps=3)
    assert backbone.nfe.count - before == 3
    unet = load_network(backbone, "instruct_pix2pix", "", untrained=True).model
    pipe = diffusers_pipeline(StableDiffusionInstructPix2PixPipeline, backbone, 3, unet=unet, image_encoder=None)
    ref = pipe("make it a watercolor", image=image[None], num_inference_steps=3, guidance_scale=1.0,
               image_guidance_scale=1.0, generator=torch.Generator().manual_seed(7),
               output_type="pt").images  # fmt: skip
    assert (ours.image - ref).abs().max().item() <= 1e-4


def test_a_sample_without_instruction_is_skipped_with_the_reason(image):
    method = get_method("instruct_pix2pix")
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    assert method.missing(sample, method.resolve({})) == ["instruction"]


@pytest.mark.slow
def test_a_checkpoint_whose_text_encoder_differs_brings_its_own_and_equals_diffusers(backbone, image, tmp_path):
    """A pipeline folder whose UNet does not fit the backbone's text encoder: the method uses the
    checkpoint's own VAE, text encoder and scheduler, fingerprinted, and still equals diffusers."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bench.diffusion.tiny import write_pipeline

    config = {k: v for k, v in dict(backbone.unet.config).items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        text_config = CLIPTextConfig(vocab_size=49408, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, max_position_embeddings=77, projection_dim=48)  # fmt: skip
        text_encoder = CLIPTextModel(text_config)
        unet = UNet2DConditionModel.from_config({**config, "in_channels": 8, "cross_attention_dim": 48})
    write_pipeline(tmp_path / "ip2p", unet, backbone.vae, text_encoder)
    sample = Sample("x", image, "a cat", instruction="make it a dog")
    ours = edit(backbone, sample, model=str(tmp_path / "ip2p"), untrained=False, steps=3)
    network = load_network(backbone, "instruct_pix2pix", str(tmp_path / "ip2p"))
    assert network.components is not None
    assert set(network.fingerprint["own_components_sha256"]) == {"unet", "vae", "text_encoder"}
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(tmp_path / "ip2p", safety_checker=None,
                                                                  requires_safety_checker=False)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("make it a dog", image=image[None], num_inference_steps=3, guidance_scale=7.5, image_guidance_scale=1.5,
               generator=torch.Generator().manual_seed(7), output_type="pt").images  # fmt: skip
    assert (ours.image - ref).abs().max().item() <= 1e-4
