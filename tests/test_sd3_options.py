"""SD3 beyond the diffusers-equality tests: Blended Latent on the flow schedule, the backbone
options that matter at real size (``text_encoder_3: none``, ``offload_text_encoders``), and a
resumed SD3 or SDXL run giving the same cells as an uninterrupted one."""

import json

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from bench.data import Sample
from bench.diffusion.backbone import Backbone, BackboneSpec
from bench.diffusion.masks import latent_mask
from bench.execution.runner import resume_run, start_run
from bench.method import EditRow
from bench.registry import get_method
from bench.store import Store
from tests.helpers import read_cells, run_config

STEPS = 4


@pytest.fixture(scope="module")
def sd3_without_t5():
    return Backbone(BackboneSpec(name="tiny-sd3", device="cpu", text_encoder_3="none"))


def test_blended_latent_on_sd3_keeps_the_flow_noised_source_outside_the_mask(sd3, image):
    mask = torch.zeros(1, 128, 128)
    mask[:, 30:90, 20:75] = 1
    sample = Sample("s", image, "a photo of a cat", "a photo of a dog", mask=mask)
    method = get_method("blended_latent")()
    setting = method.resolve({"steps": STEPS, "t0": 0.75, "w": 4.0})
    trace = []
    rows = [EditRow(sample, None, torch.Generator().manual_seed(0))]
    final = method.latents(sd3, rows, setting, lambda *a: trace.append(a))
    keep = (latent_mask(mask, sd3.vae_factor) == 0).expand_as(final)
    source = sd3.encode_image(image[None])
    schedule = sd3.new_scheduler(STEPS)
    assert len(trace) == 3 and keep.any() and (~keep).any()
    for step, latent, noised in trace[:-1]:
        sigma = schedule.sigmas[schedule.index_of(step.t) + 1]
        noise = (noised - (1 - sigma) * source) / sigma  # the flow's z_s = (1 - s) z0 + s n, inverted
        assert torch.equal(latent[keep], noised[keep]) and 0.5 < noise.std().item() < 1.5
    assert torch.equal(final[keep], source[keep])
    assert not torch.allclose(final[~keep], source[~keep])


def test_without_t5_the_conditioning_has_zeros_in_t5s_place(sd3, sd3_without_t5):
    assert sd3_without_t5.text_encoder_3 is None and sd3_without_t5.tokenizer_3 is None
    with_t5, without = sd3.encode_text("a photo of a cat"), sd3_without_t5.encode_text("a photo of a cat")
    assert with_t5.shape == without.shape
    t5 = slice(77, -1)  # CLIP's 77 states, then T5's, then the packed pooled token
    assert without[:, t5].abs().max() == 0 and with_t5[:, t5].abs().max() > 0
    torch.testing.assert_close(without[:, :77], with_t5[:, :77])
    assert sd3_without_t5.fingerprint["text_encoder_3"] == "none"
    assert sd3_without_t5.fingerprint_id != sd3.fingerprint_id
    assert "text_encoder_3" not in sd3_without_t5.family.weight_files(sd3_without_t5.spec)


def test_sd3_cfg_without_t5_equals_diffusers_without_t5(sd3_without_t5, image):
    backbone = sd3_without_t5
    method = get_method("cfg")()
    sample = Sample("s", image, "a photo of a cat", "a photo of a dog")
    ours = method.edit(backbone, sample, None, method.resolve({"w": 5.0, "steps": 3}), torch.Generator().manual_seed(3))
    pipe = StableDiffusion3Pipeline(
        transformer=backbone.transformer, scheduler=backbone.new_scheduler(3).scheduler, vae=backbone.vae,
        text_encoder=backbone.text_encoder, tokenizer=backbone.tokenizer, text_encoder_2=backbone.text_encoder_2,
        tokenizer_2=backbone.tokenizer_2, text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    size = backbone.resolution
    ref = pipe("a photo of a dog", height=size, width=size, num_inference_steps=3, guidance_scale=5.0,
               generator=torch.Generator().manual_seed(3), output_type="pt").images  # fmt: skip
    assert (ours.image - ref).abs().max().item() <= 1e-4


def test_offloaded_text_encoders_visit_the_device_once_per_new_prompt(monkeypatch):
    backbone = Backbone(BackboneSpec(name="tiny-sd3", device="cpu", offload_text_encoders=True))
    moves = []
    for module in backbone.text_encoders:
        original = module.to
        monkeypatch.setattr(module, "to", lambda where, _to=original, _m=module: moves.append(str(where)) or _to(where))
    first = backbone.encode_text("a photo of a cat")
    again = backbone.encode_text("a photo of a cat")
    assert again is first and moves == ["cpu"] * 3 + ["cpu"] * 3  # there and back, once, for 3 encoders
    assert all(next(m.parameters()).device.type == "cpu" for m in backbone.text_encoders)
    plain = Backbone(BackboneSpec(name="tiny-sd3", device="cpu"))
    torch.testing.assert_close(first, plain.encode_text("a photo of a cat"), rtol=0, atol=0)
    assert backbone.fingerprint["offload_text_encoders"] is True and backbone.fingerprint_id != plain.fingerprint_id


@pytest.mark.parametrize(
    "name,inversion,family,scheduler",
    [("tiny-sd3", "flow_inversion", "sd3", "flow_match_euler"), ("tiny-sdxl", "ddim_inversion", "sdxl", "ddim"),
     ("tiny-flux", "flow_inversion", "flux", "flow_match_euler")],
)
def test_a_resumed_run_gives_the_cells_of_an_uninterrupted_one(tmp_path, name, inversion, family, scheduler):
    methods = {"sdedit": {"steps": STEPS, "t0": 0.75}, inversion: {"steps": STEPS}}
    config = run_config(tmp_path, methods, backbone={"name": name, "device": "cpu"})
    run_dir, counts = start_run(config, progress=False)
    before = read_cells(run_dir).set_index("key")
    assert counts["ok"] == len(before) == 4
    lost = before.index[[0, 3]].tolist()
    images = {k: (run_dir / before.loc[k, "output_path"]).read_bytes() for k in lost}
    store = Store(run_dir)
    store.db.executemany("DELETE FROM metrics WHERE key = ?", [(k,) for k in lost])
    store.db.executemany("DELETE FROM cells WHERE key = ?", [(k,) for k in lost])
    store.close()
    for k in lost:
        (run_dir / before.loc[k, "output_path"]).unlink()
    _, counts = resume_run(run_dir, progress=False)
    assert counts["ok"] == 2 and counts["already done"] == 2
    after = read_cells(run_dir).set_index("key")
    for k in lost:
        assert (run_dir / after.loc[k, "output_path"]).read_bytes() == images[k]
    backbone = json.loads((run_dir / "manifest.json").read_text())["backbone"]
    assert backbone["family"] == family and backbone["scheduler"] == scheduler


@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl"])
def test_dropping_t5_on_a_family_without_it_is_a_one_line_error(name):
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match=f"text_encoder_3 applies to SD3/3.5 only; '{name}' is sd"):
        Backbone(BackboneSpec(name=name, device="cpu", text_encoder_3="none"))
