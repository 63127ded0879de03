"""Every UNet method ported to SDXL runs on the tiny SDXL backbone through the runner (one cell,
1-2 steps: every cell ok, finite output), and the SDXL-specific behaviour of the ported methods:
properties that hold for any weights, attention-layer selection on SDXL's UNet, batching and caches."""

import pytest
import torch

from bench.data import Sample
from bench.diffusion.families import UNET_FAMILIES
from bench.errors import ConfigError
from bench.registry import builtin_names, get_method
from tests.helpers import read_cells, run_config
from tests.test_guidance_nets import tiny_clip_folder

#: Every built-in method declaring SDXL (``external`` aside: it makes no image), at the first setting of
#: its conformance case on SDXL (``Method.conformance``), so a newly ported method is run here too.
PORTED = {
    cls.name: cls.conformance.setting(0, "sdxl")
    for cls in map(get_method, builtin_names()) if "sdxl" in cls.families and cls.conformance.settings
}  # fmt: skip
#: What the runner's sample set lacks: a class label, and a toy CLIP folder that runs faster than an untrained ViT-B/32.
RUNNER_VALUES = {"classifier_guidance": lambda: {"label": "0"},
                 "clip_guidance": lambda: {"clip_model": tiny_clip_folder(), "untrained": False}}  # fmt: skip
#: Methods that need networks trained for SD 1.x (ControlNet, T2I-Adapter, InstructPix2Pix's UNet).
SD_ONLY = {"controlnet", "t2i_adapter", "instruct_pix2pix"}
INVERSIONS = ("ddim", "null_text", "negative_prompt", "direct")


def run_on_sdxl(tmp_path, sdxl, methods):
    from bench.execution.runner import Runner

    config = run_config(tmp_path, methods, n=1, backbone={"name": "tiny-sdxl", "device": "cpu"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Runner(config, run_dir, backbone=sdxl, progress=False).run()
    return read_cells(run_dir)


def test_the_ported_methods_are_exactly_those_declaring_sdxl():
    builtin = [get_method(name) for name in builtin_names()]  # not the ones other test modules register
    declared = {cls.name for cls in builtin if "sdxl" in cls.families}
    assert declared == set(PORTED) | {"external", "openai_images"}  # these two never touch the backbone
    unet_only = {cls.name for cls in builtin if cls.families == ("sd",)}
    assert unet_only == SD_ONLY and set(UNET_FAMILIES) == {"sd", "sdxl"}


@pytest.mark.parametrize("name", sorted(PORTED))
def test_one_cell_of_each_ported_method_runs_on_tiny_sdxl(tmp_path, sdxl, name):
    setting = {**PORTED[name], **RUNNER_VALUES.get(name, dict)()}
    cells = run_on_sdxl(tmp_path, sdxl, {name: setting})
    assert len(cells) >= 1 and set(cells["status"]) == {"ok"}, cells[["status", "error"]].to_dict("records")
    assert cells["metric.psnr"].notna().all()  # a finite image was scored


@pytest.mark.parametrize("name", sorted(SD_ONLY))
def test_an_sd_only_method_on_sdxl_fails_before_any_cell(tmp_path, name):
    message = f"method '{name}' does not support the SDXL backbone family .*supports: SD 1.x/2.x$"
    with pytest.raises(ConfigError, match=message):
        run_config(tmp_path, {name: {}}, backbone={"name": "tiny-sdxl"})


def relative_error(latent, z0):
    return ((latent.double() - z0.double()).abs().max() / z0.abs().max()).item()


def test_sdxl_ddim_round_trip_at_w1_improves_with_the_steps(sdxl, image):
    """DDIM inversion then regeneration with the source prompt at w = 1. The untrained UNet makes
    the round trip far from exact on every family (tiny: mse 1.50 -> 0.98, tiny-sdxl: 1.08 -> 0.78
    from 10 to 50 steps), so the property is that the error falls with the steps."""
    from bench.diffusion.inversion.ddim import prepare_inversion, regenerate

    z0 = sdxl.encode_image(image[None])
    errors = []
    for steps in (10, 50):
        sample = Sample(f"inv{steps}", image, "a photo of a cat", "a photo of a cat")
        inversion = prepare_inversion(sdxl, sample, "ddim", steps).value
        errors.append(((regenerate(sdxl, inversion, sample.source_prompt, sample.source_prompt, 1.0) - z0) ** 2).mean())
    assert errors[1] < errors[0], errors


def test_sdxl_exact_inversions_return_the_source_latent(sdxl, image):
    """EDICT and edit-friendly DDPM inversion reconstruct exactly for any weights, on SDXL too."""
    from bench.diffusion.inversion.ddim import Inversion
    from bench.diffusion.inversion.ddpm import ddpm_invert, noise_generator
    from bench.diffusion.inversion.edict import edict_denoise, edict_invert
    from methods.ddpm_inversion import regenerate_ddpm

    sample = Sample("exact", image, "a photo of a cat", "a photo of a dog")
    z0 = sdxl.encode_image(image[None])
    pair = edict_invert(sdxl, z0, sample.source_prompt, 3.0, 5, 0.93)
    back = edict_denoise(sdxl, pair, sample.source_prompt, 3.0, 5, 0.93)
    assert relative_error(pair[:1], z0) > 1 and relative_error(back[:1], z0) <= 1e-4
    latents, maps = ddpm_invert(sdxl, z0, sample.source_prompt, 3.5, 5, noise_generator(sample, 0))
    back = regenerate_ddpm(sdxl, Inversion("ddpm", latents, noise_maps=maps), sample.source_prompt, 3.5)
    assert relative_error(back, z0) <= 1e-4


@pytest.mark.parametrize("name,off", [
    ("p2p", {"cross_replace_steps": 0.0, "self_replace_steps": 0.0, "blend_words": "none"}),
    ("masactrl", {"start_step": 3}),
    ("pnp", {"feature_injection": 0.0, "attention_injection": 0.0}),
])  # fmt: skip
def test_a_switched_off_attention_editor_equals_its_plain_regeneration(sdxl, image, name, off):
    """No control active: the target branch is the plain regeneration of the inversion with the target prompt."""
    from bench.diffusion.inversion.ddim import regenerate

    method = get_method(name)()
    sample = Sample("off", image, "a photo of a cat", "a photo of a dog", edit_words=("cat", "dog"))
    setting = method.resolve({"steps": 3, "inversion": "ddim", **off})
    inversion = method.prepare(sdxl, sample, setting)
    inversion = getattr(inversion, "value", inversion)
    ours = method.edit(sdxl, sample, inversion, setting, torch.Generator().manual_seed(0)).image
    plain = sdxl.decode(regenerate(sdxl, inversion, sample.source_prompt, sample.target_prompt, setting["w"])).float()
    assert (ours - plain).abs().max().item() <= 1e-4


def test_attention_editors_find_their_layers_in_sdxls_unet(sdxl):
    """SDXL's attention blocks hold several transformer layers: each one is a layer of its own, in forward order."""
    from bench.diffusion.attention.hooks import self_attention_layers
    from methods.pnp import injected_attention_layers

    names = self_attention_layers(sdxl.unet)
    blocks = [n.removesuffix(".attn1.processor") for n in names]
    assert blocks == [
        "down_blocks.1.attentions.0.transformer_blocks.0", "down_blocks.1.attentions.0.transformer_blocks.1",
        "mid_block.attentions.0.transformer_blocks.0", "mid_block.attentions.0.transformer_blocks.1",
        "up_blocks.0.attentions.0.transformer_blocks.0", "up_blocks.0.attentions.0.transformer_blocks.1",
        "up_blocks.0.attentions.1.transformer_blocks.0", "up_blocks.0.attentions.1.transformer_blocks.1",
    ]  # fmt: skip
    assert injected_attention_layers(sdxl.unet) == names[5:]  # the decoder's but its first
    masactrl = get_method("masactrl")
    masactrl.check_backbone(masactrl.resolve({"start_layer": 7}), sdxl)
    with pytest.raises(ConfigError, match="start_layer = 8 is not allowed; this UNet has 8 self-attention layers"):
        masactrl.check_backbone(masactrl.resolve({"start_layer": 8}), sdxl)


def test_families_config_runs_the_inversion_regeneration_on_sdxl():
    from bench.execution.config import load_config
    from bench.paths import repo_root

    config = load_config(repo_root() / "configs" / "families.yaml", ["ddim_inversion={}"], backbone="tiny-sdxl")
    assert config.backbone.name == "tiny-sdxl"
    assert set(config.settings) == {"reconstruct", "sdedit", "cfg", "ddim_inversion"}


@pytest.fixture
def masked(image):
    mask = torch.zeros(1, 128, 128)
    mask[:, 30:90, 20:75] = 1
    return Sample("masked", image, "a photo of a cat", "a photo of a dog", mask=mask, edit_words=("cat", "dog"))


def test_sdxl_ilvr_at_factor_one_ends_on_the_source(sdxl, masked):
    from tests.test_conditioning import run

    final, _, _ = run("ilvr", sdxl, masked, N=1, cond_stop=1.0)
    torch.testing.assert_close(final, sdxl.encode_image(masked.image[None]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,given", [("repaint", {"r": 2, "j": 1}), ("blended_latent", {"t0": 0.75})])
def test_sdxl_masked_methods_keep_the_noised_source_outside_the_mask(sdxl, masked, name, given):
    from bench.diffusion.masks import latent_mask
    from tests.test_conditioning import run

    final, trace, _ = run(name, sdxl, masked, w=4.0, **given)
    keep = (latent_mask(masked.mask, 8, 0) == 0).expand_as(final)
    for _, latent, reference in trace:
        assert torch.equal(latent[keep], reference[keep])
    assert torch.equal(final[keep], sdxl.encode_image(masked.image[None])[keep])


def test_sdxl_guidance_at_scale_zero_and_cfg_from_a_source_are_the_plain_samplers(sdxl, masked):
    from tests.test_guidance import run
    from tests.test_guidance_nets import FACTORY

    common = {"w": 3.0, "steps": 4, "t0": 0.5}
    cfg = run(sdxl, "cfg", common, masked).image
    assert torch.equal(cfg, run(sdxl, "sdedit", common, masked).image)
    off = {**common, "scale": 0.0, "classifier": FACTORY, "untrained": True, "label": "0"}
    guided = run(sdxl, "classifier_guidance", off, masked)
    assert torch.equal(guided.image, cfg) and guided.grad_evals == 0


def test_sdxl_pix2pix_zero_switched_off_is_the_source_regeneration(sdxl, masked):
    from bench.diffusion.inversion.ddim import prepare_inversion, regenerate
    from methods.pix2pix_zero import pix2pix_zero_latent

    setting = get_method("pix2pix_zero").resolve({"steps": 3, "inversion": "ddim", "xa_guidance": 0.0,
                                                  "direction_scale": 0.0})  # fmt: skip
    inversion = prepare_inversion(sdxl, masked, "ddim", 3).value
    latent, grad_evals = pix2pix_zero_latent(sdxl, masked, inversion, setting)
    plain = regenerate(sdxl, inversion, masked.source_prompt, masked.source_prompt, setting["w"])
    assert grad_evals == 0 and (latent - plain).abs().max().item() <= 1e-4
