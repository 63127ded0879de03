"""The FLUX.1 family on the tiny FLUX backbone: equality with diffusers' FLUX pipelines (fp32, 1e-4),
packing, the VAE's shift, the guidance embedding, flow inversion, the family's NFE rules in the dry
run, and FlowEdit's FLUX defaults."""

import pytest
import torch
from diffusers import FluxImg2ImgPipeline, FluxPipeline

from bench.data import Sample
from bench.diffusion.backbone import Backbone, BackboneSpec, step_rules
from bench.diffusion.families.flux import img2img_steps, pack_latents, unpack_latents
from bench.errors import ConfigError
from bench.execution.config import build_config
from bench.execution.plan import plan_settings
from bench.method import rules_in_force
from bench.registry import get_method

TOLERANCE = 1e-4


def flux_pipeline(pipeline_class, backbone, steps):
    pipe = pipeline_class(
        transformer=backbone.transformer, scheduler=backbone.new_scheduler(steps).scheduler, vae=backbone.vae,
        text_encoder=backbone.text_encoder, tokenizer=backbone.tokenizer, text_encoder_2=backbone.text_encoder_2,
        tokenizer_2=backbone.tokenizer_2,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def edit(backbone, name, image, setting, seed):
    method = get_method(name)()
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    resolved = method.resolve(setting, backbone.family_name)
    return method.edit(backbone, sample, None, resolved, torch.Generator().manual_seed(seed)).image


def test_tiny_flux_is_a_saved_flux_pipeline(flux):
    assert flux.family_name == "flux" and flux.latent_channels == 16 and flux.labels == ["untrained backbone"]
    assert flux.transformer.config.in_channels == 64 and flux.transformer.config.guidance_embeds
    assert flux.fingerprint["family"] == "flux" and not list(flux.folder.rglob("*.bin"))
    assert flux.resolution == 128 and flux.vae.config.shift_factor == 0.1159
    assert len(flux.tokenizer) == 49408 and flux.tokenizer_2("a cat").input_ids[-1] == 1
    assert flux.encode_text("a cat").shape == (1, 512 + 1, flux.transformer.config.joint_attention_dim)


def test_packing_is_diffusers_packing(flux):
    z = torch.randn(2, 16, 16, 16)
    packed = FluxPipeline._pack_latents(z, 2, 16, 16, 16)
    torch.testing.assert_close(pack_latents(z), packed, rtol=0, atol=0)
    torch.testing.assert_close(unpack_latents(packed, 16, 16), FluxPipeline._unpack_latents(packed, 128, 128, 8))


@pytest.mark.parametrize("w,steps", [(3.5, 4), (1.0, 3)])
def test_flux_sampling_equals_diffusers_flux_pipeline(flux, image, w, steps):
    ours = edit(flux, "cfg", image, {"w": w, "steps": steps}, 3)
    ref = flux_pipeline(FluxPipeline, flux, steps)(
        "a photo of a dog", height=128, width=128, num_inference_steps=steps, guidance_scale=w,
        generator=torch.Generator().manual_seed(3), output_type="pt",
    ).images  # fmt: skip
    assert (ours - ref).abs().max().item() <= TOLERANCE


def test_the_guidance_value_reaches_the_transformer(flux, image):
    assert (edit(flux, "cfg", image, {"w": 3.5, "steps": 2}, 0) - edit(flux, "cfg", image, {"w": 5.0, "steps": 2}, 0)).abs().max() > 1e-3


def test_true_cfg_equals_diffusers_with_an_empty_negative_prompt(image):
    backbone = Backbone(BackboneSpec(name="tiny-flux", device="cpu", true_cfg_scale=4.0))
    before = backbone.nfe.count
    ours = edit(backbone, "cfg", image, {"w": 3.5, "steps": 3}, 5)
    assert backbone.nfe.count - before == 3 * 2
    ref = flux_pipeline(FluxPipeline, backbone, 3)(
        "a photo of a dog", negative_prompt="", true_cfg_scale=4.0, height=128, width=128, num_inference_steps=3,
        guidance_scale=3.5, generator=torch.Generator().manual_seed(5), output_type="pt",
    ).images  # fmt: skip
    assert (ours - ref).abs().max().item() <= TOLERANCE
    assert backbone.fingerprint_id != Backbone(BackboneSpec(name="tiny-flux", device="cpu")).fingerprint_id
    with pytest.raises(ConfigError, match="true_cfg_scale applies to FLUX.1 only"):
        Backbone(BackboneSpec(name="tiny-sd3", device="cpu", true_cfg_scale=2.0))


@pytest.mark.parametrize("t0,w,steps", [(0.5, 3.5, 10), (1.0, 1.0, 4), (0.7, 2.0, 3), (0.6, 3.5, 7)])
def test_flux_sdedit_equals_diffusers_img2img(flux, image, t0, w, steps):
    """Non-integer ``steps * t0`` included: FluxImg2ImgPipeline keeps ``steps - int(steps - steps * t0)`` steps."""
    ours = edit(flux, "sdedit", image, {"t0": t0, "w": w, "steps": steps}, 7)
    ref = flux_pipeline(FluxImg2ImgPipeline, flux, steps)(
        "a photo of a dog", image=flux.encode_image(image[None]), height=128, width=128, strength=t0,
        num_inference_steps=steps, guidance_scale=w, generator=torch.Generator().manual_seed(7), output_type="pt",
    ).images  # fmt: skip
    assert (ours - ref).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("t0", [0.6, 1.0])
def test_flux_sdedit_on_a_non_square_image_equals_diffusers_img2img_at_its_size(flux, image, t0):
    """A ``keep_aspect`` frame of another shape: the timestep shift reads the image's own token count
    (FluxImg2ImgPipeline's ``image_seq_len``), not the backbone's square one."""
    wide = torch.nn.functional.interpolate(image[None], size=(128, 192), mode="bilinear", align_corners=False)[0]
    ours = edit(flux, "sdedit", wide, {"t0": t0, "w": 3.5, "steps": 4}, 7)
    ref = flux_pipeline(FluxImg2ImgPipeline, flux, 4)(
        "a photo of a dog", image=flux.encode_image(wide[None]), height=128, width=192, strength=t0,
        num_inference_steps=4, guidance_scale=3.5, generator=torch.Generator().manual_seed(7), output_type="pt",
    ).images  # fmt: skip
    assert ours.shape == ref.shape == (1, 3, 128, 192) and (ours - ref).abs().max().item() <= TOLERANCE
    square, own = flux.new_scheduler(4).sigmas, flux.new_scheduler(4, flux.latent_hw(wide)).sigmas
    assert not torch.allclose(square, own)  # the test would not tell the two shifts apart otherwise


def test_the_img2img_rule_is_diffusers_not_the_floor():
    assert img2img_steps(3, 0.7) == 3 and img2img_steps(7, 0.6) == 5 and img2img_steps(10, 0.5) == 5
    assert img2img_steps(4, 1.0) == 4 and img2img_steps(10, 0.01) == 1


def test_reconstruct_uses_the_vae_shift_and_scale(flux, image):
    config = flux.vae.config
    z = flux.encode_image(image[None])
    expected = (flux.vae.encode(image[None] * 2 - 1).latent_dist.mean - config.shift_factor) * config.scaling_factor
    torch.testing.assert_close(z, expected)
    decoded = flux.vae.decode(z / config.scaling_factor + config.shift_factor).sample
    torch.testing.assert_close(edit(flux, "reconstruct", image, {}, 0), (decoded / 2 + 0.5).clamp(0, 1))


def test_flux_flow_inversion_returns_to_the_source(flux, image):
    from bench.diffusion.inversion.ddim import regenerate
    from bench.diffusion.inversion.flow import FlowInversionSpec

    z0 = flux.encode_image(image[None])
    errors = {}
    for steps in (10, 40):
        sample = Sample(f"inv{steps}", image, "a photo of a cat", "a photo of a cat")
        inversion = FlowInversionSpec(steps).prepare(flux, sample).value
        back = regenerate(flux, inversion, sample.source_prompt, sample.source_prompt, 1.0)
        errors[steps] = ((back - z0).abs().max() / z0.abs().max()).item()
    assert errors[40] < errors[10] / 3, errors  # Euler's first order: ~4x less error at 4x the steps (measured 3.3x)


def dry_run_nfe(methods: dict, backbone: str = "tiny-flux") -> dict:
    config = build_config({"backbone": {"name": backbone}, "methods": methods, "metrics": ["psnr"]})
    plans, preparations = plan_settings(config, 1)
    prep = {}
    with rules_in_force(step_rules(config.backbone)):
        for p in preparations:
            prep[p.method] = prep.get(p.method, 0) + p.spec.nfe()
    return {p.method: p.edit_nfe + prep.get(p.method, 0) for p in plans}


def test_the_dry_run_counts_flux_guidance_as_one_evaluation(flux):
    assert dry_run_nfe({"rf_inversion": {"steps": 28}}) == {"rf_inversion": 56}  # FireFlow's Table 1: 28 steps, NFE 56
    assert dry_run_nfe({"rf_inversion": {"steps": 28}}, "tiny-sd3") == {"rf_inversion": 28 + 56}  # CFG on SD3
    assert dry_run_nfe({"flowedit": {}}) == {"flowedit": 24 * 2}  # FLUX config: n_max 24, two branches


def test_flowedit_takes_its_flux_configuration_on_flux(flux):
    config = build_config({"backbone": {"name": "tiny-flux"}, "methods": {"flowedit": {}}, "metrics": ["psnr"]})
    assert config.settings["flowedit"] == [{"steps": 28, "n_max": 24, "n_min": 0, "n_avg": 1, "src_w": 1.5, "tar_w": 5.5}]
    config = build_config({"backbone": {"name": "tiny-sd3"}, "methods": {"flowedit": {}}, "metrics": ["psnr"]})
    assert config.settings["flowedit"][0]["steps"] == 50 and config.settings["flowedit"][0]["tar_w"] == 13.5


def test_flux_measured_nfe_equals_the_estimate(flux, image):
    method = get_method("rf_inversion")()
    sample = Sample("nfe", image, "a cat", "a dog")
    setting = method.resolve({"steps": 4}, "flux")
    before = flux.nfe.count
    prep = method.prepare(flux, sample, setting)
    between = flux.nfe.count
    method.edit(flux, sample, prep.value, setting, torch.Generator())
    with rules_in_force(flux.step_rules):
        assert method.estimate_nfe(setting) == (flux.nfe.count - between, between - before) == (4, 4)


def test_rf_inversion_on_flux_inverts_as_diffusers_flux_pipeline_does(flux, image):
    """``times = diffusers`` (the FLUX default): step ``i`` of ``N`` evaluates the velocity at the unshifted
    time ``i / (N + 1)`` and moves by the shifted gap ``s_i - s_{i+1}`` from the noisy end first."""
    method = get_method("rf_inversion")()
    setting = method.resolve({"steps": 4, "gamma": 0.0}, "flux")
    assert setting["times"] == "diffusers" and method.resolve({}, "sd3")["times"] == "shifted"
    latents = method.prepare(flux, Sample("rf", image, "a cat", "a dog"), setting).value.latents
    sigmas, empty = flux.new_scheduler(4).sigmas, flux.encode_text("")
    for i in range(2):
        velocity = flux.eps(latents[i : i + 1], 1000 * i / 5, empty, guidance=0.0)
        torch.testing.assert_close(latents[i + 1 : i + 2], latents[i : i + 1] + (sigmas[i] - sigmas[i + 1]) * velocity)


def test_auto_dtype_is_bf16_for_flux_on_cuda_and_fp32_elsewhere():
    from bench.diffusion.backbone import dtype_name

    spec = BackboneSpec(name="tiny-flux")
    assert spec.dtype == "auto" and dtype_name(spec, "flux", torch.device("cuda")) == "bf16"
    assert dtype_name(spec, "flux", torch.device("cpu")) == "fp32" and dtype_name(spec, "sd3", torch.device("cuda")) == "fp32"
    assert dtype_name(BackboneSpec(name="tiny-flux", dtype="fp32"), "flux", torch.device("cuda")) == "fp32"


def test_model_cpu_offload_is_recorded_and_changes_no_pixel(flux, image):
    offloaded = Backbone(BackboneSpec(name="tiny-flux", device="cpu", cpu_offload=True))
    assert offloaded.describe()["spec"]["cpu_offload"] and offloaded.fingerprint_id == flux.fingerprint_id
    assert torch.equal(edit(offloaded, "cfg", image, {"w": 3.5, "steps": 2}, 1), edit(flux, "cfg", image, {"w": 3.5, "steps": 2}, 1))
    with pytest.raises(ConfigError, match="cpu_offload already offloads the text encoders"):
        BackboneSpec(name="tiny-flux", cpu_offload=True, offload_text_encoders=True)


def test_the_memory_benchmark_counts_full_size_flux_without_allocating():
    import benchmarks.memory as memory

    components = memory.flux_dev_components()
    counts = {name: sum(p.numel() for p in model.parameters()) for name, model in components.items()}
    assert counts["transformer"] == 11_901_408_320  # FLUX.1 [dev]'s "12B"
    assert 4.7e9 < counts["text_encoder_2 (T5-XXL)"] < 5.0e9 and 0.08e9 < counts["vae"] < 0.09e9
    assert all(p.device.type == "meta" for model in components.values() for p in model.parameters())
