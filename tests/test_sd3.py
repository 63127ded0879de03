"""The SD3 family on the tiny SD3 backbone: equality with diffusers' SD3 pipelines, flow inversion
round trips, the family check, and the disk cache of flow inversions."""

import pytest
import torch
from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3Pipeline

from bench.data import Sample
from bench.diffusion.families.sd3 import euler_step
from bench.errors import ConfigError
from bench.registry import get_method
from tests.helpers import run_config


def sd3_pipeline(pipeline_class, backbone, steps):
    pipe = pipeline_class(
        transformer=backbone.transformer, scheduler=backbone.new_scheduler(steps).scheduler, vae=backbone.vae,
        text_encoder=backbone.text_encoder, tokenizer=backbone.tokenizer, text_encoder_2=backbone.text_encoder_2,
        tokenizer_2=backbone.tokenizer_2, text_encoder_3=backbone.text_encoder_3, tokenizer_3=backbone.tokenizer_3,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tiny_sd3_is_a_saved_sd3_pipeline(sd3):
    assert sd3.family_name == "sd3" and sd3.latent_channels == 16 and sd3.labels == ["untrained backbone"]
    assert sd3.fingerprint["family"] == "sd3" and not list(sd3.folder.rglob("*.bin"))
    assert sd3.vae.config.shift_factor != 0
    ids = sd3.tokenizer_3("a photo of a cat").input_ids
    assert ids[-1] == 1 and 2 not in ids  # T5's </s> appended, no unknown pieces


@pytest.mark.parametrize("t0,w,steps", [(0.5, 7.5, 10), (1.0, 1.0, 4), (0.6, 3.0, 5), (0.6, 3.0, 7)])
def test_sd3_sdedit_equals_diffusers_img2img(sd3, image, t0, w, steps):
    """Non-integer ``steps * t0`` included (7 x 0.6): StableDiffusion3Img2ImgPipeline runs
    ``steps - int(steps - steps * t0)`` = 5 steps, not ``int(steps * t0)`` = 4."""
    method = get_method("sdedit")()
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    ours = method.edit(sd3, sample, None, method.resolve({"t0": t0, "w": w, "steps": steps}), torch.Generator().manual_seed(7)).image
    pipe = sd3_pipeline(StableDiffusion3Img2ImgPipeline, sd3, steps)
    ref = pipe("a photo of a dog", image=sd3.encode_image(image[None]), strength=t0, num_inference_steps=steps,
               guidance_scale=w, generator=torch.Generator().manual_seed(7), output_type="pt").images  # fmt: skip
    assert (ours - ref).abs().max().item() <= 1e-4


def test_the_dry_run_and_the_run_of_sdedit_on_sd3_keep_diffusers_start_steps(sd3, tmp_path):
    from bench.execution.plan import dry_run_text
    from bench.execution.runner import Runner
    from tests.helpers import read_cells

    config = run_config(tmp_path, {"sdedit": {"steps": 7, "t0": 0.6, "w": 3.0}}, backbone={"name": "tiny-sd3"})
    estimate = 5 * 2  # 2 cells, start step 2: 5 of 7 steps (diffusers' rule; int(7 * 0.6) would be 4) under CFG
    assert f"sdedit | — | 2 | 2 | 5 | {estimate}" in dry_run_text(config).splitlines()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Runner(config, run_dir, backbone=sd3, progress=False).run()
    cells = read_cells(run_dir)
    assert (cells["status"] == "ok").all(), cells["error"].dropna().tolist()
    assert (cells["nfe"] == estimate).all()


@pytest.mark.parametrize("w,steps", [(4.0, 6), (1.0, 3)])
def test_sd3_cfg_equals_diffusers_text_to_image(sd3, image, w, steps):
    method = get_method("cfg")()
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    ours = method.edit(sd3, sample, None, method.resolve({"w": w, "steps": steps}), torch.Generator().manual_seed(3)).image
    pipe = sd3_pipeline(StableDiffusion3Pipeline, sd3, steps)
    ref = pipe("a photo of a dog", height=128, width=128, num_inference_steps=steps, guidance_scale=w,
               generator=torch.Generator().manual_seed(3), output_type="pt").images  # fmt: skip
    assert (ours - ref).abs().max().item() <= 1e-4


def test_sd3_encode_decode_uses_the_shift_factor(sd3, image):
    config = sd3.vae.config
    z = sd3.encode_image(image[None])
    expected = (sd3.vae.encode(image[None] * 2 - 1).latent_dist.mean - config.shift_factor) * config.scaling_factor
    torch.testing.assert_close(z, expected)
    assert z.shape == (1, 16, 16, 16)


def test_euler_step_is_the_schedulers_step(sd3):
    schedule = sd3.new_scheduler(5)
    z, v = torch.randn(1, 16, 16, 16), torch.randn(1, 16, 16, 16)
    t = schedule.timesteps[2]
    reference = schedule.scheduler
    reference.set_begin_index(2)
    expected = reference.step(v, t, z).prev_sample
    torch.testing.assert_close(schedule.step(v, t, z).prev_sample, expected)
    torch.testing.assert_close(euler_step(z, v, schedule.sigmas[2], schedule.sigmas[3]), expected)


def test_flow_inversion_with_the_source_prompt_returns_to_the_source(sd3, image):
    """Inversion then regeneration at w = 1 retraces the ODE: the error is Euler's, falling with the steps."""
    from bench.diffusion.inversion.ddim import regenerate
    from bench.diffusion.inversion.flow import FlowInversionSpec

    z0 = sd3.encode_image(image[None])
    errors = {}
    for steps in (10, 50):
        sample = Sample(f"inv{steps}", image, "a photo of a cat", "a photo of a cat")
        inversion = FlowInversionSpec(steps).prepare(sd3, sample).value
        back = regenerate(sd3, inversion, sample.source_prompt, sample.source_prompt, 1.0)
        errors[steps] = ((back - z0).abs().max() / z0.abs().max()).item()
    print(errors)
    assert errors[50] < errors[10] / 3 and errors[50] < 0.02


def test_flow_inversion_is_cached_and_counts_its_nfe(sd3, image):
    method = get_method("flow_inversion")()
    sample = Sample("cached", image, "a cat", "a dog")
    setting = method.resolve({"steps": 4, "w": 2.0})
    before = sd3.nfe.count
    first = method.prepare(sd3, sample, setting)
    assert not first.cache_hit and sd3.nfe.count - before == 4 == method.estimate_nfe(setting)[1]
    second = method.prepare(sd3, sample, setting)
    assert second.cache_hit and torch.equal(first.value.latents, second.value.latents)
    assert method.estimate_nfe(setting)[0] == 8
    assert method.edit(sd3, sample, second.value, setting, torch.Generator()).image.shape == (1, 3, 128, 128)


def test_a_method_on_an_unsupported_family_fails_before_any_cell(tmp_path):
    with pytest.raises(ConfigError, match="method 'p2p' does not support the SD3/3.5 backbone family .*supports: SD 1.x/2.x, SDXL$"):
        run_config(tmp_path, {"p2p": {}}, backbone={"name": "tiny-sd3"})
    with pytest.raises(ConfigError, match="'flow_inversion' does not support the SD 1.x/2.x .*supports: SD3/3.5, FLUX.1$"):
        run_config(tmp_path, {"flow_inversion": {}})


def test_an_sd3_batch_equals_its_cells_run_alone(sd3, image):
    from bench.method import EditRow

    method = get_method("sdedit")()
    setting = method.resolve({"t0": 0.6, "w": 4.0, "steps": 5})
    samples = [Sample("a", image, "a cat", "a dog"), Sample("b", image.flip(-1), "a cat", "a red car")]
    rows = [EditRow(s, None, torch.Generator().manual_seed(i)) for i, s in enumerate(samples)]
    batch = method.edit_batch(sd3, rows, setting)
    for i, sample in enumerate(samples):
        alone = method.edit(sd3, sample, None, setting, torch.Generator().manual_seed(i)).image
        assert (batch[i].image - alone).abs().max().item() <= 1e-5
