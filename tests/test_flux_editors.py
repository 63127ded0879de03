"""The training-free flow editors on FLUX.1 (issue 34): their authors' FLUX defaults and NFE, and the
attention access in FLUX's blocks through diffusers' processors, checked for any weights on tiny-flux.

- value sharing (``rf_solver``, ``fireflow``) lives in the single-stream blocks, where ``attn.to_v``
  projects text and image tokens together: the whole ``V`` is recorded, and injecting what was
  recorded at the same evaluation gives the plain velocity back;
- KV-Edit's cache records every block's image keys and values; injecting them at the same evaluation
  gives the plain velocity back whatever the background is, while ``attn_scale`` changes it;
- ``kv_edit`` keeps the source latent outside the mask exactly; with no background it is plain Euler
  regeneration from where its inversion hands over.
"""

import pytest
import torch

from bench.data import Sample
from bench.diffusion.attention.kv_cache import KVCache, caching_kv, flux_attention_names
from bench.diffusion.attention.value_sharing import ValueSharing, shared_blocks, sharing_values
from bench.diffusion.backbone import BackboneSpec, step_rules
from bench.diffusion.inversion.flow_solvers import FIRST, Evaluation
from bench.diffusion.sampling import guided_eps
from bench.method import EditRow
from bench.registry import get_method
from bench.method import rules_in_force
from methods.kv_edit import kv_edit_latents


def _flux_defaults(name: str) -> dict:
    return get_method(name).resolve({}, family="flux")


def _estimate(name: str, setting: dict) -> tuple[int, int]:
    with rules_in_force(step_rules(BackboneSpec(name="tiny-flux"))):
        return get_method(name).estimate_nfe(setting)


def test_rf_solver_and_fireflow_take_their_authors_flux_defaults_and_nfe():
    rf = _flux_defaults("rf_solver")
    assert (rf["steps"], rf["w"], rf["inversion_w"], rf["inject"], rf["blocks"]) == (15, 2.0, 1.0, 2, 18)
    assert _estimate("rf_solver", rf) == (30, 30)  # 60 in all, FireFlow's Table 4
    fire = _flux_defaults("fireflow")
    assert (fire["steps"], fire["w"], fire["inversion_w"], fire["inject"], fire["blocks"]) == (8, 2.0, 1.0, 1, 38)
    assert _estimate("fireflow", fire) == (9, 9)  # 18 in all, FireFlow's Table 4
    assert get_method("rf_solver").resolve({})["w"] == 7.0  # SD3 keeps its CFG default


def test_uniedit_flow_and_kv_edit_defaults_and_nfe_on_flux():
    uni = _flux_defaults("uniedit_flow")
    assert (uni["steps"], uni["alpha"], uni["omega"], uni["w"], uni["variant"]) == (15, 0.6, 5.0, 1.0, "bfl")
    assert _estimate("uniedit_flow", uni) == (18, 10)
    kv = _flux_defaults("kv_edit")
    assert (kv["steps"], kv["skip"], kv["inversion_w"], kv["w"], kv["attn_scale"]) == (28, 4, 1.5, 5.5, 1.0)
    assert _estimate("kv_edit", kv) == (24, 24)


def test_uniedit_variants_round_alpha_steps_as_each_authors_code():
    method = get_method("uniedit_flow")
    for alpha, steps, floor, rounded in ((0.75, 10, 7, 8), (0.8, 12, 9, 10), (0.6, 15, 9, 9)):
        assert method.schedule(method.resolve({"alpha": alpha, "steps": steps}))[1] == floor
        assert method.schedule(method.resolve({"alpha": alpha, "steps": steps}, family="flux"))[1] == rounded


def _latent(flux, seed: int = 0) -> torch.Tensor:
    size = flux.latent_size
    return torch.randn(1, 16, size, size, generator=torch.Generator().manual_seed(seed))


def test_value_sharing_on_flux_records_the_whole_v_of_the_single_stream_blocks(flux):
    transformer = flux.transformer
    blocks = shared_blocks(transformer, 18)
    assert blocks == list(range(len(transformer.single_transformer_blocks)))
    z, cond, uncond = _latent(flux), flux.encode_text("a boat"), flux.encode_text("")
    plain = guided_eps(flux, z, 500.0, cond, uncond, 2.0)
    recording, at = ValueSharing.recording(), Evaluation(0, FIRST)
    with sharing_values(transformer, blocks, recording):
        recording.at = at
        recorded = guided_eps(flux, z, 500.0, cond, uncond, 2.0)
    text_tokens, image_tokens = cond.shape[1] - 1, (flux.latent_size // 2) ** 2
    inner = transformer.single_transformer_blocks[0].attn.inner_dim
    assert {key: v.shape for key, v in recording.banks[0].items()} == {
        (at, b): (text_tokens + image_tokens, inner) for b in blocks
    }
    injecting = ValueSharing.injecting(recording.banks)
    with sharing_values(transformer, blocks, injecting):
        injecting.at = at
        same = guided_eps(flux, z, 500.0, cond, uncond, 2.0)
        other = guided_eps(flux, _latent(flux, 1), 500.0, cond, uncond, 2.0)
    assert torch.equal(recorded, plain) and torch.allclose(same, plain, atol=1e-6, rtol=0)
    assert (other - guided_eps(flux, _latent(flux, 1), 500.0, cond, uncond, 2.0)).abs().max() > 1e-4
    assert transformer.attn_processors.keys() and all(
        type(p).__name__ == "FluxAttnProcessor" for p in transformer.attn_processors.values()
    )


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_kv_cache_injected_at_the_recorded_evaluation_gives_the_plain_velocity_unless_scaled(flux, scale):
    transformer = flux.transformer
    z, cond, uncond = _latent(flux), flux.encode_text("a boat"), flux.encode_text("")
    plain = guided_eps(flux, z, 700.0, cond, uncond, 3.0)
    tokens = (flux.latent_size // 2) ** 2
    recording = KVCache.recording(tokens)
    with caching_kv(transformer, recording):
        recording.at = 0
        assert torch.equal(guided_eps(flux, z, 700.0, cond, uncond, 3.0), plain)
    assert {layer for _, layer in recording.banks[0]} == set(flux_attention_names(transformer))
    background = torch.rand(1, tokens, generator=torch.Generator().manual_seed(2)) < 0.5
    injecting = KVCache.injecting(recording.banks, background, scale)
    with caching_kv(transformer, injecting):
        injecting.at = 0
        replayed = guided_eps(flux, z, 700.0, cond, uncond, 3.0)
    difference = (replayed - plain).abs().max()
    assert difference < 1e-5 if scale == 0 else difference > 1e-4


def _masked_sample(flux, mask_value=None) -> Sample:
    size = flux.resolution
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, size, size)
    mask[:, size // 4 : size // 2, size // 8 : size // 2] = 1
    if mask_value is not None:
        mask.fill_(mask_value)
    return Sample("boat", image, "a boat on a lake", "a swan on a lake", mask=mask)


def test_kv_edit_keeps_the_source_latent_outside_the_mask(flux):
    method = get_method("kv_edit")()
    setting = method.resolve({"steps": 4, "skip": 1}, family="flux")
    for sample in (_masked_sample(flux), _masked_sample(flux, 0.0)):
        prep = method.prepare(flux, sample, setting).value
        latents = kv_edit_latents(flux, [EditRow(sample, prep, torch.Generator())], setting)
        outside = torch.nn.functional.interpolate(sample.mask[None], size=latents.shape[-2:], mode="bilinear") == 0
        assert torch.equal(torch.where(outside, latents, 0), torch.where(outside, prep.z0, 0))
        assert (latents - prep.z0).abs().max() > 1e-3 if sample.mask.any() else torch.equal(latents, prep.z0)


def test_kv_edit_without_background_is_euler_regeneration_from_the_inversion_hand_over(flux):
    method = get_method("kv_edit")()
    setting = method.resolve({"steps": 4, "skip": 1}, family="flux")
    sample = _masked_sample(flux, 1.0)
    prep = method.prepare(flux, sample, setting).value
    latents = kv_edit_latents(flux, [EditRow(sample, prep, torch.Generator())], setting)
    schedule, cond, uncond = flux.new_scheduler(4), flux.encode_text(sample.target_prompt), flux.encode_text("")
    z = prep.latents[1]  # the latent the last inversion step started from, as the authors' code
    for j in range(1, 4):
        z = z + (schedule.sigmas[j + 1] - schedule.sigmas[j]) * guided_eps(flux, z, schedule.timesteps[j], cond, uncond, 5.5)
    assert torch.allclose(latents, z, atol=1e-5, rtol=0)


def test_the_protocol_rows_dry_run_at_the_papers_nfe():
    """configs/flow_protocol.yaml's rows of the four editors, as the dry run counts them on tiny-flux."""
    from bench.diffusion.backbone import step_rules as backbone_rules
    from bench.execution.config import load_config
    from bench.execution.plan import plan_settings
    from bench.method import rules_in_force

    config = load_config("configs/flow_protocol.yaml")
    plans, preparations = plan_settings(config, 1)
    prep = {}
    with rules_in_force(backbone_rules(config.backbone)):
        for p in preparations:
            prep[p.method] = prep.get(p.method, 0) + p.spec.nfe()
    totals = {}
    for plan in plans:
        totals.setdefault(plan.method, []).append(plan.edit_nfe)
    assert (totals["rf_solver"], prep["rf_solver"]) == ([30], 30)  # 60: FireFlow's Table 4
    assert (sorted(totals["fireflow"]), prep["fireflow"]) == ([9, 16], 9 + 16)  # 18 at 8 steps, 32 at 15
    assert (totals["uniedit_flow"], prep["uniedit_flow"]) == ([18], 10)
    assert (totals["kv_edit"], prep["kv_edit"]) == ([24], 24)  # kept in memory, not disk-cached: counted all the same
    with rules_in_force(backbone_rules(config.backbone)):
        assert get_method("kv_edit").estimate_nfe(config.settings["kv_edit"][0]) == (24, 24)


def test_attn_mask_keeps_the_regions_apart_and_the_text_sees_all():
    background = torch.tensor([[True, False, True]])
    allowed = KVCache.recording(3, separate=background).separation(2, "cpu")[0, 0]
    text, fg, bg = [0, 1], [3], [2, 4]
    assert allowed[text].all() and allowed[:, text].all()
    assert allowed[fg][:, fg].all() and allowed[2:][:, 2:][torch.tensor([0, 2])][:, torch.tensor([0, 2])].all()
    assert not allowed[fg][:, bg].any() and not allowed[bg][:, fg].any()
    assert KVCache.recording(3).separation(2, "cpu") is None
