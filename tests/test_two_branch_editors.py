"""masactrl, pnp and pix2pix_zero on the tiny untrained backbone: properties that hold for any weights."""

from dataclasses import replace

import pytest
import torch

from bench.data import Sample
from bench.diffusion.attention.hooks import (
    HookedAttention,
    cross_attention_layers,
    hook_state,
    hooked,
    hooked_layers,
    self_attention_layers,
)
from bench.diffusion.backbone import Backbone, BackboneSpec
from bench.diffusion.inversion.ddim import prepare_inversion, regenerate
from bench.errors import ConfigError
from bench.registry import get_method
from methods.masactrl import MutualSelfAttention, masactrl_latents
from methods.pix2pix_zero import CrossAttentionRecorder, _guide, attention_loss, edit_direction, pix2pix_zero_latent
from methods.pnp import PlugAndPlay, feature_block, injected_attention_layers, pnp_latents, reconstruction

STEPS = 3
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def sample():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, 8, 8, generator=g)
    image = torch.nn.functional.interpolate(low, size=128, mode="bilinear", align_corners=False)[0]
    return Sample("cat", image, "a photo of a cat on a sofa", "a photo of a dog on a sofa", edit_words=("cat", "dog"))


def setting(name, **given):
    return get_method(name).resolve({"steps": STEPS, **given})


def inversion(backbone, sample, kind="ddim"):
    return prepare_inversion(backbone, sample, kind, STEPS).value


def regeneration(backbone, inv, sample, prompt, w):
    return regenerate(backbone, inv, sample.source_prompt, prompt, w)


def assert_close(a, b):
    assert (a - b).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("name", ["masactrl", "pnp"])
def test_an_empty_source_prompt_runs_the_source_branch_with_it(backbone, sample, name):
    # PnPInversion's MasaCtrl and PnP scripts: inversion and source branch with "".
    method = get_method(name)()
    extra = {"start_step": 0, "start_layer": 0} if name == "masactrl" else {}
    s = setting(name, inversion="ddim", source_prompt="", **extra)
    inv = method.prepare(backbone, sample, s).value
    empty = replace(sample, source_prompt="")
    inverted_with = empty if name == "masactrl" else sample  # PnPInversion's PnP inverts with the source prompt
    assert_close(inv.z_T, inversion(backbone, inverted_with).z_T)
    assert (inv.z_T - inversion(backbone, sample if name == "masactrl" else empty).z_T).abs().max() > 1e-3
    run = masactrl_latents if name == "masactrl" else pnp_latents
    assert_close(run(backbone, sample, inv, s)[:1], regeneration(backbone, inv, empty, "", s["w"]))
    default_key = method.preparation_key(setting(name, inversion="ddim", **extra))
    assert (method.preparation_key(s) != default_key) == (name == "masactrl")


# -- masactrl ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ddim", "direct"])
def test_masactrl_never_active_is_the_plain_target_regeneration(backbone, sample, kind):
    s = setting("masactrl", inversion=kind, start_step=STEPS, start_layer=0)
    inv = inversion(backbone, sample, kind)
    latents = masactrl_latents(backbone, sample, inv, s)
    assert_close(latents[1:], regeneration(backbone, inv, sample, sample.target_prompt, s["w"]))


def test_masactrl_with_the_source_prompt_is_the_source_branch_reconstruction(backbone, sample):
    same = replace(sample, target_prompt=sample.source_prompt)
    s = setting("masactrl", inversion="ddim", start_step=0, start_layer=0)
    inv = inversion(backbone, same)
    latents = masactrl_latents(backbone, same, inv, s)
    assert_close(latents[1:], latents[:1])
    assert_close(latents[:1], regeneration(backbone, inv, same, same.source_prompt, s["w"]))
    # and the control does act when the prompts differ
    edited = masactrl_latents(backbone, sample, inv, s)[1:]
    assert (edited - regeneration(backbone, inv, sample, sample.target_prompt, s["w"])).abs().max() > 1e-3


def test_masactrl_counts_layers_over_the_whole_unet_in_forward_order(backbone):
    names = self_attention_layers(backbone.unet)
    assert [n.split(".")[0] for n in names] == ["down_blocks", "mid_block", "up_blocks", "up_blocks"]
    get_method("masactrl").check_backbone(setting("masactrl", start_step=0, start_layer=3), backbone)
    with pytest.raises(ConfigError, match="start_layer = 4 .* 4 self-attention layers"):
        get_method("masactrl").check_backbone(setting("masactrl", start_step=0, start_layer=4), backbone)
    with pytest.raises(ConfigError, match="start_step"):
        setting("masactrl", start_step=STEPS + 1)


def _attention_inputs(backbone, rows=4, queries=64):
    attn = backbone.unet.up_blocks[1].attentions[1].transformer_blocks[0].attn1
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(rows * attn.heads, queries, 8, generator=g) for _ in range(3))
    return attn, q, k, v


def test_mutual_attention_reads_source_keys_and_values_and_masks_split_them(backbone):
    attn, q, k, v = _attention_inputs(backbone)
    control = MutualSelfAttention(frozenset(), 0)
    plain = control.attend("x", attn, q, k, v, None).view(4, attn.heads, 64, 8)
    own = torch.bmm(attn.get_attention_scores(q, k, None), v).view(4, attn.heads, 64, 8)
    rows_k, rows_v = k.view(4, attn.heads, 64, 8), v.view(4, attn.heads, 64, 8)
    swapped = torch.bmm(
        attn.get_attention_scores(q.view(4, attn.heads, 64, 8)[1], rows_k[0], None), rows_v[0]
    )  # target row 1 with source row 0's keys and values
    torch.testing.assert_close(plain[1], swapped)
    torch.testing.assert_close(plain[0::2], own[0::2])  # sources keep their own attention
    control.masks = (torch.ones(1, 1, 16, 16), torch.ones(1, 1, 16, 16))  # all foreground: same as no mask
    torch.testing.assert_close(control.attend("x", attn, q, k, v, None).view_as(plain), plain)
    half = torch.zeros(1, 1, 16, 16)
    half[..., :8] = 1
    control.masks = (half, half)
    masked = control.attend("x", attn, q, k, v, None).view_as(plain)
    torch.testing.assert_close(masked[0::2], plain[0::2])
    assert not torch.allclose(masked[1::2], plain[1::2])


def test_masactrl_mask_guided_needs_edit_words_and_runs(backbone, sample):
    method = get_method("masactrl")
    s = setting("masactrl", inversion="ddim", start_step=1, start_layer=0, mask_guided=True)
    assert method.missing(replace(sample, edit_words=None), s) == ["edit_words"]
    assert method.missing(replace(sample, edit_words=None), setting("masactrl", start_step=0)) == []
    latents = masactrl_latents(backbone, sample, inversion(backbone, sample), s)
    assert torch.isfinite(latents).all()


# -- pnp ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ddim", "direct"])
def test_pnp_without_injection_is_the_plain_target_regeneration(backbone, sample, kind):
    s = setting("pnp", inversion=kind, feature_injection=0.0, attention_injection=0.0)
    inv = inversion(backbone, sample, kind)
    plain = regeneration(backbone, inv, sample, sample.target_prompt, s["w"])
    assert_close(pnp_latents(backbone, sample, inv, s)[1:], plain)


def test_pnp_with_the_source_prompt_is_the_reconstruction(backbone, sample):
    same = replace(sample, target_prompt=sample.source_prompt)
    s = setting("pnp", inversion="ddim", feature_injection=1.0, attention_injection=1.0)
    inv = inversion(backbone, same)
    assert_close(pnp_latents(backbone, same, inv, s)[1:], regeneration(backbone, inv, same, same.source_prompt, s["w"]))
    edited = pnp_latents(backbone, sample, inv, s)[1:]
    assert (edited - regeneration(backbone, inv, sample, sample.target_prompt, s["w"])).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["ddim", "direct"])
def test_pnp_stored_source_row_is_one_unguided_row_read_from_the_stored_path(backbone, sample, kind):
    # PnPInversion's run_editing_pnp.py: the source row is not denoised but read, each step, from the
    # inversion (direct) or from the unguided DDIM reconstruction one step ahead (ddim), and both CFG
    # halves of the source row see the same latent and embedding.
    s = setting("pnp", inversion=kind, source_row="stored", source_prompt="", negative_prompt="blurry")
    inv = inversion(backbone, sample, kind)
    rec = reconstruction(backbone, inv.z_T, sample.source_prompt, STEPS)
    rows, features = [], []
    handle = feature_block(backbone.unet).conv2.register_forward_hook(lambda m, a, out: features.append(out.clone()))
    try:
        pnp_latents(backbone, sample, inv, s, on_step=lambda step, latent: rows.append(latent[0].clone()))
    finally:
        handle.remove()
    stored = [rec[min(i + 1, STEPS - 1)] if kind == "ddim" else inv.pivot(i)[0] for i in range(STEPS)]
    for row, expected in zip(rows, stored):
        assert_close(row, expected)
    features = [f for f in features if len(f) == 4]  # (source, target) x (negative, text); not the reconstruction's
    assert len(features) == STEPS and all(torch.equal(f[0], f[2]) for f in features)  # one source row
    guided = setting("pnp", inversion=kind, negative_prompt="blurry")
    features.clear()
    handle = feature_block(backbone.unet).conv2.register_forward_hook(lambda m, a, out: features.append(out.clone()))
    try:
        pnp_latents(backbone, sample, inv, guided)
    finally:
        handle.remove()
    assert not torch.equal(features[0][0], features[0][2])  # a guided source row: its null and prompt halves differ


def test_pnp_stored_over_ddim_starts_the_target_at_the_reconstructions_first_step(backbone, sample):
    s = setting("pnp", inversion="ddim", source_row="stored", feature_injection=0.0, attention_injection=0.0)
    inv = inversion(backbone, sample)
    rec = reconstruction(backbone, inv.z_T, sample.source_prompt, STEPS)
    from_first_step = replace(inv, latents=torch.cat([inv.latents[:-1], rec[:1]]))
    plain = regeneration(backbone, from_first_step, sample, sample.target_prompt, s["w"])
    assert_close(pnp_latents(backbone, sample, inv, s)[1:], plain)


def test_pnp_stored_source_row_needs_a_stored_path():
    with pytest.raises(ConfigError, match="source_row = 'stored' needs inversion 'ddim' or 'direct'"):
        get_method("pnp").check(setting("pnp", inversion="null_text", source_row="stored", nti_w=7.5))


def test_pnp_injects_the_source_rows_features_queries_and_keys_until_its_fractions(backbone):
    assert injected_attention_layers(backbone.unet) == ["up_blocks.1.attentions.1.transformer_blocks.0.attn1.processor"]
    control = PlugAndPlay(frozenset({"a"}), attention_until=1, feature_until=2)
    features = torch.randn(4, 3, 5, 5)
    injected = control.inject_features(None, (), features)
    assert torch.equal(injected[1::2], features[0::2]) and torch.equal(injected[0::2], features[0::2])
    attn, q, k, v = _attention_inputs(backbone)
    out = control.attend("a", attn, q, k, v, None).view(4, attn.heads, 64, 8)
    rows = [x.view(4, attn.heads, 64, 8) for x in (q, k, v)]
    target = torch.bmm(attn.get_attention_scores(rows[0][0], rows[1][0], None), rows[2][1])
    torch.testing.assert_close(out[1], target)  # source's queries and keys, target's own values
    assert control.active("a") and not control.active("b")
    control.step = 1
    assert not control.active("a") and control.inject_features(None, (), features) is not None
    control.step = 2
    assert control.inject_features(None, (), features) is None


# -- pix2pix-zero -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ddim", "direct"])
def test_pix2pix_zero_without_guidance_or_direction_is_the_source_regeneration(backbone, sample, kind):
    s = setting("pix2pix_zero", inversion=kind, xa_guidance=0.0, direction_scale=0.0)
    inv = inversion(backbone, sample, kind)
    latent, grad_evals = pix2pix_zero_latent(backbone, sample, inv, s)
    assert grad_evals == 0
    assert_close(latent, regeneration(backbone, inv, sample, sample.source_prompt, s["w"]))


def test_pix2pix_zero_loss_over_both_halves_steps_each_copy_by_its_own_half(backbone, sample):
    # The authors' pipeline (PnPInversion's script): the loss is the mean over 2 x heads maps of the
    # CFG batch; attention never mixes samples, so each copy moves by its own half's loss at half
    # the step size. The unguided form is the same in both.
    from bench.diffusion.sampling import guided_eps

    inv, unet = inversion(backbone, sample), backbone.unet
    t = backbone.new_scheduler(STEPS).timesteps[0]
    null, source, edited = (backbone.encode_text(p) for p in ("", sample.source_prompt, sample.target_prompt))
    recorder = CrossAttentionRecorder(all_rows=True)
    with hooked(unet, hooked_layers(unet, cross_attention_layers(unet), recorder)):
        recorder.on = True
        with torch.no_grad():
            guided_eps(backbone, inv.z_T, t, source, null, 7.5)
        reference = {name: m.detach() for name, m in recorder.maps.items()}
        both = _guide(backbone, inv.z_T.expand(2, -1, -1, -1), t, torch.cat([null, edited]), reference, 20.0, recorder)
        halves = []
        for i, text in enumerate((null, edited)):
            own = {name: m.chunk(2)[i] for name, m in reference.items()}
            halves.append(_guide(backbone, inv.z_T, t, text, own, 10.0, recorder))  # large: the untrained maps' loss is small
    assert_close(both, torch.cat(halves))
    assert (halves[1] - inv.z_T).abs().max() > 1e-3  # the conditional copy moves (the unconditional one matches its reference)
    unguided = [pix2pix_zero_latent(backbone, sample, inv, setting("pix2pix_zero", inversion="ddim", xa_guidance=0.0,
                                                                   loss_halves=h))[0] for h in ("both", "conditional")]
    assert_close(*unguided)


def test_pix2pix_zero_offset_edit_keeps_the_unedited_edit_on_the_inversion_path(backbone, sample):
    inv = inversion(backbone, sample, "direct")
    s = dict(inversion="direct", negative_prompt="source", direction_scale=0.0, xa_guidance=0.0)
    on_path, _ = pix2pix_zero_latent(backbone, sample, inv, setting("pix2pix_zero", offset_edit=True, **s))
    assert_close(on_path, inv.latents[:1])
    drifted, _ = pix2pix_zero_latent(backbone, sample, inv, setting("pix2pix_zero", **s))
    assert (drifted - inv.latents[:1]).abs().max() > 1e-3


def test_pix2pix_zero_guides_at_every_resolution_and_counts_gradient_steps(backbone, sample):
    method = get_method("pix2pix_zero")()
    s = setting("pix2pix_zero", inversion="ddim")
    inv = inversion(backbone, sample)
    seen = []
    _, grad_evals = pix2pix_zero_latent(backbone, sample, inv, s, on_step=lambda i, ref, maps: seen.append((ref, maps)))
    assert grad_evals == STEPS and len(seen) == STEPS
    layers = cross_attention_layers(backbone.unet)
    for reference, maps in seen:
        assert set(reference) == set(maps) == set(layers)
        assert {m.shape[1] for m in reference.values()} == {16 * 16, 8 * 8}
        assert not any(m.requires_grad for m in maps.values())
    before = backbone.nfe.count
    result = method.edit(backbone, sample, inv, s, torch.Generator())
    # per step: reference CFG (2), guidance forward (1), edit CFG (2)
    assert result.grad_evals == STEPS and backbone.nfe.count - before == 5 * STEPS


def test_pix2pix_zero_guidance_step_lowers_the_attention_loss(backbone, sample):
    """A small step against the gradient lowers the loss: the gradient is the loss's."""
    inv = inversion(backbone, sample)
    s = setting("pix2pix_zero", inversion="ddim", xa_guidance=0.0, direction_scale=1.0)
    ref_maps = []
    pix2pix_zero_latent(backbone, sample, inv, s, on_step=lambda i, ref, maps: ref_maps.append(ref))
    unet, t = backbone.unet, backbone.new_scheduler(STEPS).timesteps[0]
    edited = backbone.encode_text(sample.source_prompt) + edit_direction(backbone, sample)
    recorder = CrossAttentionRecorder(on=True)
    def loss_at(latent):
        with torch.no_grad():
            backbone.eps(latent, t, edited)
        return attention_loss(recorder.maps, ref_maps[0]).item()

    with hooked(unet, hooked_layers(unet, cross_attention_layers(unet), recorder)):
        start = loss_at(inv.z_T)
        assert start > 0
        moved = _guide(backbone, inv.z_T, t, edited, ref_maps[0], 1e-3 / start, recorder)
        assert loss_at(moved) < start


def test_edit_direction_is_the_difference_of_side_means(backbone, sample):
    same = replace(sample, target_prompt=sample.source_prompt, edit_words=("cat", "cat"))
    assert edit_direction(backbone, same).abs().max() == 0
    swapped = replace(
        sample, source_prompt=sample.target_prompt, target_prompt=sample.source_prompt, edit_words=("dog", "cat")
    )
    torch.testing.assert_close(edit_direction(backbone, swapped), -edit_direction(backbone, sample))


# -- hooks --------------------------------------------------------------------------------------------
def test_each_editor_hooks_exactly_its_layers_while_it_runs(backbone, sample):
    unet, inv = backbone.unet, inversion(backbone, sample)
    names = self_attention_layers(unet)

    def hooked_names(run):
        seen = []
        run(lambda *_: seen.append({n for n, p in unet.attn_processors.items() if isinstance(p, HookedAttention)}))
        return seen[0]

    s = setting("masactrl", inversion="ddim", start_step=0, start_layer=2)
    assert hooked_names(lambda f: masactrl_latents(backbone, sample, inv, s, on_step=f)) == set(names[2:])
    s = {**s, "mask_guided": True}
    assert hooked_names(lambda f: masactrl_latents(backbone, sample, inv, s, on_step=f)) == set(
        names[2:] + cross_attention_layers(unet)
    )
    conv2 = feature_block(unet).conv2
    seen_hooks = []
    s = setting("pnp", inversion="ddim")
    pnp_latents(backbone, sample, inv, s, on_step=lambda *_: seen_hooks.append(len(conv2._forward_hooks)))
    assert seen_hooks[0] == 1 and len(conv2._forward_hooks) == 0
    injected = hooked_names(lambda f: pnp_latents(backbone, sample, inv, s, on_step=f))
    assert injected == set(injected_attention_layers(unet))


def test_hooked_restores_processors_and_forward_hooks_after_an_error(backbone):
    unet = backbone.unet
    before = hook_state(unet)
    block = unet.up_blocks[1].resnets[1].conv2
    with pytest.raises(RuntimeError, match="boom"):
        with hooked(unet, {}, [(block, lambda m, a, o: o)]):
            assert hook_state(unet) != before
            raise RuntimeError("boom")
    assert hook_state(unet) == before


def test_attention_layers_follow_the_backbone_resolution(sample):
    wide = Backbone(BackboneSpec(resolution=192))
    big = replace(sample, image=torch.nn.functional.interpolate(sample.image[None], size=192)[0])
    s = get_method("pix2pix_zero").resolve({"steps": 1, "inversion": "ddim"})
    seen = []
    inv = prepare_inversion(wide, big, "ddim", 1).value
    pix2pix_zero_latent(wide, big, inv, s, on_step=lambda i, reference, maps: seen.append(reference))
    assert {m.shape[1] for m in seen[0].values()} == {24 * 24, 12 * 12}


def test_after_every_cell_of_a_sweep_the_unet_is_as_before_even_when_a_cell_raised(tmp_path, backbone, monkeypatch):
    from bench.execution.config import build_config
    from bench.execution.runner import Runner
    from tests.helpers import write_dataset

    calls = []

    def sometimes_fail(module, args):  # part of the UNet's original state: registered before the snapshot
        calls.append(1)
        if len(calls) % 7 == 0:
            raise RuntimeError("UNet failure in the middle of a cell")

    handle = backbone.unet.register_forward_pre_hook(sometimes_fail)
    try:
        before = hook_state(backbone.unet)
        states, commit = [], Runner._commit

        def checked(self, outcome):  # the driver commits each cell as soon as its edit has returned
            commit(self, outcome)
            cell = outcome.record
            states.append((cell.method, cell.status, hook_state(self.backbone.unet) == before))

        monkeypatch.setattr(Runner, "_commit", checked)
        methods = {
            "masactrl": {"steps": 2, "start_step": 0, "start_layer": 0, "mask_guided": [False, True]},
            "pnp": {"steps": 2},
            "pix2pix_zero": {"steps": 2},
        }
        raw = {"dataset": {"name": None, "path": write_dataset(tmp_path / "data", n=1)}, "methods": methods,
               "output": str(tmp_path / "runs")}  # fmt: skip
        (tmp_path / "run").mkdir()
        Runner(build_config(raw), tmp_path / "run", backbone=backbone, progress=False).run()
    finally:
        handle.remove()
    assert len(states) == 4 and all(same for _, _, same in states)
    statuses = {status for _, status, _ in states}
    assert statuses == {"ok", "failed"}, states


def test_pix2pix_zero_pnpinversion_forms_prompt_direction_and_source_negative(backbone, sample):
    direction = edit_direction(backbone, sample, "prompts")
    expected = backbone.encode_text(sample.target_prompt) - backbone.encode_text(sample.source_prompt)
    assert_close(direction, expected)
    # With the source prompt as negative prompt and no edit, every step is the conditional one (w drops out).
    s = setting("pix2pix_zero", inversion="ddim", negative_prompt="source", xa_guidance=0.0, direction_scale=0.0)
    inv = inversion(backbone, sample)
    latent, _ = pix2pix_zero_latent(backbone, sample, inv, s)
    assert_close(latent, regeneration(backbone, inv, sample, sample.source_prompt, 1.0))
