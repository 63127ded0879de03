"""The SDXL family on the tiny SDXL backbone: equality with diffusers' SDXL pipelines, the
conditioning (two encoders, pooled token, zeros for the empty prompt, time ids), and the family's
place in fingerprints and caches."""

import json
import shutil

import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from bench.data import Sample
from bench.errors import ConfigError
from bench.registry import get_method


def sdxl_pipeline(pipeline_class, backbone, steps):
    """diffusers' SDXL pipeline over the backbone's components. Comparable settings: the same fresh
    DDIM scheduler (not the pipeline folder's), no watermark, ``force_zeros_for_empty_prompt`` as
    the folder says, and (img2img) the backbone's posterior-mean latent given as ``image``."""
    pipe = pipeline_class(
        vae=backbone.vae, text_encoder=backbone.text_encoder, text_encoder_2=backbone.text_encoder_2,
        tokenizer=backbone.tokenizer, tokenizer_2=backbone.tokenizer_2, unet=backbone.unet,
        scheduler=backbone.new_scheduler(steps), force_zeros_for_empty_prompt=backbone.force_zeros_for_empty_prompt,
        add_watermarker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tiny_sdxl_is_a_saved_sdxl_pipeline(sdxl):
    index = json.loads((sdxl.folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and sdxl.family_name == "sdxl"
    config = sdxl.unet.config
    assert config.addition_embed_type == "text_time" and config.transformer_layers_per_block == [1, 2]
    assert sdxl.fingerprint["family"] == "sdxl" and sdxl.fingerprint["force_zeros_for_empty_prompt"] is True
    assert sdxl.labels == ["untrained backbone"] and not list(sdxl.folder.rglob("*.bin"))


@pytest.mark.parametrize("t0,w,steps", [(0.5, 7.5, 10), (1.0, 1.0, 4), (0.6, 3.0, 5)])
def test_sdxl_sdedit_equals_diffusers_img2img(sdxl, image, t0, w, steps):
    method = get_method("sdedit")()
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    setting = method.resolve({"t0": t0, "w": w, "steps": steps})
    ours = method.edit(sdxl, sample, None, setting, torch.Generator().manual_seed(7)).image
    pipe = sdxl_pipeline(StableDiffusionXLImg2ImgPipeline, sdxl, steps)
    ref = pipe("a photo of a dog", image=sdxl.encode_image(image[None]), strength=t0, num_inference_steps=steps,
               guidance_scale=w, generator=torch.Generator().manual_seed(7), output_type="pt").images  # fmt: skip
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("w,steps", [(5.0, 6), (1.0, 3)])
def test_sdxl_cfg_equals_diffusers_text_to_image(sdxl, image, w, steps):
    method = get_method("cfg")()
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    setting = method.resolve({"w": w, "steps": steps})
    ours = method.edit(sdxl, sample, None, setting, torch.Generator().manual_seed(3)).image
    pipe = sdxl_pipeline(StableDiffusionXLPipeline, sdxl, steps)
    ref = pipe("a photo of a dog", height=128, width=128, num_inference_steps=steps, guidance_scale=w,
               generator=torch.Generator().manual_seed(3), output_type="pt").images  # fmt: skip
    assert (ours - ref).abs().max().item() <= 1e-4


def test_sdxl_conditioning_is_both_encoders_and_the_pooled_token(sdxl):
    text = sdxl.encode_text("a photo of a cat")
    embeds, _, pooled, _ = sdxl_pipeline(StableDiffusionXLPipeline, sdxl, 2).encode_prompt(
        "a photo of a cat", device="cpu", do_classifier_free_guidance=False
    )
    assert text.shape == (1, 77 + 1, 64)
    torch.testing.assert_close(text[:, :77], embeds)
    torch.testing.assert_close(text[:, 77, :32], pooled)
    assert not text[:, 77, 32:].any()
    assert not sdxl.encode_text("").any()  # force_zeros_for_empty_prompt: the unconditional row is zeros


def test_time_ids_follow_the_latent_size(sdxl):
    from bench.diffusion.families.sdxl import time_ids

    ids = time_ids(sdxl, torch.zeros(3, 4, 16, 24))
    assert ids.tolist() == [[128, 192, 0, 0, 128, 192]] * 3


def test_without_force_zeros_the_unconditional_is_the_encoded_empty_prompt(tmp_path, sdxl):
    from bench.diffusion.backbone import Backbone, BackboneSpec

    folder = tmp_path / "sdxl"
    shutil.copytree(sdxl.folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "force_zeros_for_empty_prompt": False}))
    other = Backbone(BackboneSpec(name=str(folder), device="cpu"))
    assert other.encode_text("").abs().sum() > 0
    assert other.fingerprint_id != Backbone(BackboneSpec(name=str(sdxl.folder), device="cpu")).fingerprint_id
    _, negative, _, negative_pooled = sdxl_pipeline(StableDiffusionXLPipeline, other, 2).encode_prompt(
        "a cat", device="cpu", do_classifier_free_guidance=True
    )
    torch.testing.assert_close(other.encode_text("")[:, :77], negative)
    torch.testing.assert_close(other.encode_text("")[:, 77, :32], negative_pooled)


def test_an_sdxl_refiner_is_a_one_line_error(tmp_path, sdxl):
    from bench.diffusion.backbone import Backbone, BackboneSpec

    folder = tmp_path / "refiner"
    shutil.copytree(sdxl.folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "requires_aesthetics_score": True}))
    with pytest.raises(ConfigError, match="refiner pipelines .* not supported"):
        Backbone(BackboneSpec(name=str(folder), device="cpu"))


def test_sdxl_encode_decode_uses_the_vae_config(sdxl, image):
    z = sdxl.encode_image(image[None])
    torch.testing.assert_close(z, sdxl.vae.encode(image[None] * 2 - 1).latent_dist.mean * 0.13025)
    assert sdxl.vae.config.scaling_factor == 0.13025
    torch.testing.assert_close(sdxl.decode(z), (sdxl.vae.decode(z / 0.13025).sample / 2 + 0.5).clamp(0, 1))


def test_an_sdxl_batch_equals_its_cells_run_alone(sdxl, image):
    from bench.method import EditRow

    samples = [Sample("a", image, "a cat", "a dog"), Sample("b", image.flip(-1), "a cat", "a red car")]
    settings = {
        "sdedit": {"t0": 0.6, "w": 4.0, "steps": 4},
        "p2p": {"inversion": "none", "steps": 3, "blend_words": "none"},
    }
    for name, given in settings.items():
        method = get_method(name)()
        setting = method.resolve(given)
        rows = [EditRow(s, None, torch.Generator().manual_seed(i)) for i, s in enumerate(samples)]
        batch = method.edit_batch(sdxl, rows, setting)
        for i, sample in enumerate(samples):
            alone = method.edit(sdxl, sample, None, setting, torch.Generator().manual_seed(i)).image
            assert (batch[i].image - alone).abs().max().item() <= 1e-5, name


def test_sdxl_nfe_estimates_and_inversion_caches_are_the_sdxl_backbones_own(tmp_path, sdxl):
    """A run on tiny-sdxl spends the NFE --dry-run estimates; its inversions are found in the disk
    cache by a dry run on tiny-sdxl and never by one on the SD 1.x tiny backbone (keys include the family)."""
    import re

    from bench.execution.plan import dry_run_text
    from bench.execution.runner import Runner
    from bench.store import setting_json
    from tests.helpers import read_cells, run_config

    methods = {"sdedit": {"steps": 2}, "cfg": {"steps": 2}, "ddim_inversion": {"steps": 2, "inversion_w": 2.125}}
    config = run_config(tmp_path, methods, n=1, backbone={"name": "tiny-sdxl", "device": "cpu"})
    (tmp_path / "run").mkdir()
    Runner(config, tmp_path / "run", backbone=sdxl, progress=False).run()
    cells = read_cells(tmp_path / "run")
    assert (cells["status"] == "ok").all(), cells["error"].dropna().tolist()
    for method, settings in config.settings.items():
        (setting,) = settings
        edit, prep = get_method(method).estimate_nfe(setting)
        (row,) = [r for r in cells[cells["method"] == method].itertuples() if r.setting == setting_json(setting)]
        assert row.nfe == edit and (row.prep_nfe or 0) == prep, method

    from bench.diffusion.tiny import tiny_backbone_dir

    tiny_backbone_dir("tiny")  # on disk, so that its dry run looks the inversion up

    def found(backbone):
        text = dry_run_text(run_config(tmp_path / backbone, methods, n=1, backbone={"name": backbone}))
        return int(re.search(r"(\d+) found in the disk cache", text).group(1))

    assert found("tiny-sdxl") == 1 and found("tiny") == 0


def test_in_fp16_the_sdxl_vae_stays_fp32_as_diffusers_upcasts_it(image):
    from bench.diffusion.backbone import Backbone, BackboneSpec

    half = Backbone(BackboneSpec(name="tiny-sdxl", device="cpu", dtype="fp16"))
    assert half.vae.dtype == torch.float32 and half.unet.dtype == torch.float16 and half.vae.config.force_upcast
    method = get_method("sdedit")()
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    out = method.edit(half, sample, None, method.resolve({"steps": 4}), torch.Generator().manual_seed(0)).image
    assert half.encode_image(image[None]).dtype == torch.float16 and torch.isfinite(out).all()


def test_the_hub_snapshot_patterns_cover_every_file_of_an_sdxl_pipeline_folder(sdxl):
    from fnmatch import fnmatch

    patterns = sdxl.family.hub_patterns(sdxl.spec)
    files = [p.relative_to(sdxl.folder).as_posix() for p in sdxl.folder.rglob("*") if p.is_file()]
    assert "text_encoder_2/model.safetensors" in files and "tokenizer_2/tokenizer.json" in files
    assert [f for f in files if not any(fnmatch(f, p) for p in patterns)] == []
