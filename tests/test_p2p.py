"""Prompt-to-Prompt on the tiny untrained backbone: properties that hold for any weights."""

from dataclasses import replace

import pytest
import torch

from bench.data import Sample
from bench.diffusion.attention.control import (
    AttentionController,
    align_tokens,
    controlled,
    prompt_tokens,
    word_positions,
)
from bench.diffusion.backbone import Backbone, BackboneSpec
from bench.diffusion.inversion.ddim import prepare_inversion, regenerate
from bench.errors import ConfigError, SampleError
from bench.registry import get_method
from bench.method import EditRow
from methods.p2p import build_blend, build_controller, p2p_batch_latents, p2p_latents

STEPS = 6


@pytest.fixture(scope="module")
def sample(image):
    return Sample("cat", image, "a photo of a cat on a sofa", "a photo of a dog on a sofa", edit_words=("cat", "dog"))


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=128, mode="bilinear", align_corners=False)[0]


@pytest.fixture(scope="module")
def method():
    return get_method("p2p")()


def setting(method, **given):
    return method.resolve({"steps": STEPS, "inversion": "ddim", "blend_words": "none", **given})


def inversion(backbone, sample, kind="ddim", **kw):
    return prepare_inversion(backbone, sample, kind, STEPS, **kw).value


def run(backbone, sample, method, inv, uncond=None, **given):
    """p2p latents (2, C, h, w) with a recording controller, the controller, and per-step latents."""
    s = setting(method, **given)
    controller = build_controller(backbone, sample, s)
    controller.record = True
    seen = []
    latents = p2p_latents(
        backbone, inv.z_T, (sample.source_prompt, sample.target_prompt), s["w"], controller, STEPS,
        uncond or (lambda i: inv.uncond(backbone, sample.source_prompt, i)),
        trajectory=inv if s["inversion"] == "direct" else None, blend=build_blend(backbone.tokenizer, sample, s),
        on_step=lambda step, z: seen.append(z.clone()),
    )  # fmt: skip
    return latents, controller, seen


@pytest.mark.parametrize("kind", ["ddim", "negative_prompt", "null_text"])
def test_target_equal_to_source_returns_the_plain_regeneration(backbone, sample, method, kind):
    same = replace(sample, target_prompt=sample.source_prompt)
    extra = {"nti_w": 7.5, "inner_steps": 2} if kind == "null_text" else {}
    s = setting(method, inversion=kind, **extra)
    prep = method.prepare(backbone, same, s).value
    edited = method.edit(backbone, same, prep, s, torch.Generator()).image
    plain = backbone.decode(regenerate(backbone, prep, same.source_prompt, same.source_prompt, s["w"]))
    assert (edited - plain).abs().max().item() <= 1e-4


def test_replace_with_full_cross_injection_gives_the_target_the_source_maps(backbone, sample, method):
    inv = inversion(backbone, sample)
    _, controller, _ = run(backbone, sample, method, inv, edit="replace", cross_replace_steps=1.0)
    cross = [(step, name, maps) for step, name, is_cross, maps in controller.recorded if is_cross]
    assert {step for step, _, _ in cross} == set(range(STEPS))
    assert {maps.shape[2] for _, _, maps in cross} == {16 * 16, 8 * 8}  # every resolution the UNet has
    for step, name, maps in cross:
        assert torch.equal(maps[1], maps[0]), (step, name)


def test_no_injection_equals_independent_generation_of_the_target(backbone, sample, method):
    inv = inversion(backbone, sample)
    s = setting(method, cross_replace_steps=0.0, self_replace_steps=0.0)
    edited = method.edit(backbone, sample, inv, s, torch.Generator()).image
    independent = backbone.decode(regenerate(backbone, inv, sample.source_prompt, sample.target_prompt, s["w"]))
    assert (edited - independent).abs().max().item() <= 1e-4


def test_self_injection_copies_source_self_attention_in_layers_up_to_a_quarter_of_the_latent(backbone, sample, method):
    inv = inversion(backbone, sample)
    _, controller, _ = run(backbone, sample, method, inv, self_replace_steps=0.5, cross_replace_steps=0.0)
    limit = (backbone.latent_size // 2) ** 2
    own = [(step, maps) for step, _, is_cross, maps in controller.recorded if not is_cross]
    assert any(maps.shape[2] > limit for _, maps in own) and any(maps.shape[2] <= limit for _, maps in own)
    left_alone = []
    for step, maps in own:
        if step < STEPS // 2 and maps.shape[2] <= limit:
            assert torch.equal(maps[1], maps[0]), (step, maps.shape)
        else:
            left_alone.append(torch.equal(maps[1], maps[0]))
    assert not all(left_alone)  # elsewhere the branches attend on their own


def test_local_blend_keeps_the_source_outside_the_mask_after_the_start_step(backbone, sample, method):
    inv = inversion(backbone, sample)
    # The untrained UNet's word maps are nearly flat (0.68..1 of their maximum): at the default
    # threshold 0.3 the mask would be everything, so the test takes 0.9 to get a partial mask.
    s = setting(method, blend_words="cat:dog", blend_start=0.5, blend_threshold=0.9)
    blend = build_blend(backbone.tokenizer, sample, s)
    tokenizer = backbone.tokenizer
    assert blend.words[0].nonzero().flatten().tolist() == word_positions(tokenizer, sample.source_prompt, "cat")
    assert blend.words[1].nonzero().flatten().tolist() == word_positions(tokenizer, sample.target_prompt, "dog")
    seen = []
    p2p_latents(backbone, inv.z_T, (sample.source_prompt, sample.target_prompt), s["w"], build_controller(backbone, sample, s),
                STEPS, lambda i: inv.uncond(backbone, sample.source_prompt, i), blend=blend,
                on_step=lambda step, z: seen.append((step.index, blend.last_mask, z.clone())))  # fmt: skip
    checked = partial = 0
    for index, mask, z in seen:
        if index < STEPS // 2:
            assert mask is None
            continue
        outside = ~mask[0, 0]
        assert torch.equal(z[1][:, outside], z[0][:, outside]), index
        checked += 1
        partial += bool(outside.any()) and bool(mask.any())
    assert checked == STEPS - STEPS // 2 and partial  # checked on a mask neither empty nor everything


def test_direct_inversion_keeps_the_source_branch_on_the_inversion_trajectory(backbone, sample, method):
    inv = inversion(backbone, sample, "direct")
    latents, _, seen = run(backbone, sample, method, inv, inversion="direct")
    for index, z in enumerate(seen):
        assert torch.equal(z[:1], inv.pivot(index)), index
    assert torch.equal(latents[0], inv.latents[0])  # ends on the source latent exactly


def test_reweight_scales_the_word_column_of_the_injected_maps(backbone, sample, method):
    inv = inversion(backbone, sample)
    _, controller, _ = run(backbone, sample, method, inv, edit="reweight", reweight_word="dog", reweight_factor=3.0,
                           cross_replace_steps=1.0)  # fmt: skip
    column = word_positions(backbone.tokenizer, sample.target_prompt, "dog")
    others = [j for j in range(77) if j not in column]
    for _, _, is_cross, maps in controller.recorded:
        if is_cross:
            torch.testing.assert_close(maps[1][..., column], 3.0 * maps[0][..., column])
            assert torch.equal(maps[1][..., others], maps[0][..., others])


def test_refine_alignment_maps_shared_tokens_and_keeps_new_ones():
    bos, a, cat, black, on, eos = 0, 1, 2, 3, 4, 5
    mapper, aligned = align_tokens([bos, a, cat, on, eos], [bos, a, black, cat, on, eos], 10)
    assert mapper[:6].tolist() == [0, 1, 0, 2, 3, 4] and aligned[:6].tolist() == [1, 1, 0, 1, 1, 1]


def test_alignment_pads_column_j_from_column_j():
    # google/prompt-to-prompt's seq_aligner: padding after the target's end reads the same column.
    mapper, aligned = align_tokens([0, 1, 2, 3, 9], [0, 1, 4, 2, 3, 9], 12)
    assert mapper[6:].tolist() == list(range(6, 12)) and aligned[6:].eq(1).all()


def test_alignment_leaves_a_swapped_word_unaligned(backbone):
    # Gap score 0 and ties to the left: "dog" is never tied to "cat"'s map under refine.
    tok = backbone.tokenizer
    source, target = prompt_tokens(tok, "a photo of a cat"), prompt_tokens(tok, "a photo of a dog")
    mapper, aligned = align_tokens(source, target, 77)
    dog = word_positions(tok, "a photo of a dog", "dog")
    assert aligned[dog].eq(0).all()
    others = [j for j in range(77) if j not in dog]
    assert aligned[others].eq(1).all() and mapper[others].tolist() == others


def test_alignment_of_an_added_word(backbone):
    tok = backbone.tokenizer
    source = prompt_tokens(tok, "a photo of a woman")
    target = prompt_tokens(tok, "a photo of a smiling woman")
    mapper, aligned = align_tokens(source, target, 77)
    smiling = word_positions(tok, "a photo of a smiling woman", "smiling")
    woman_src = word_positions(tok, "a photo of a woman", "woman")
    woman_tgt = word_positions(tok, "a photo of a smiling woman", "woman")
    assert aligned[smiling].eq(0).all() and aligned[: smiling[0]].eq(1).all()
    assert mapper[: smiling[0]].tolist() == list(range(smiling[0]))  # start token, "a photo of a"
    assert mapper[woman_tgt].tolist() == woman_src and mapper[len(target) - 1] == len(source) - 1  # "woman", end token
    assert mapper[len(target) :].tolist() == list(range(len(target), 77))


def test_refine_injects_aligned_columns_and_leaves_new_tokens_their_own(backbone, sample, method):
    longer = replace(sample, target_prompt="a photo of a black cat on a sofa")
    inv = inversion(backbone, longer)
    _, controller, _ = run(backbone, longer, method, inv, cross_replace_steps=1.0)
    black = word_positions(backbone.tokenizer, longer.target_prompt, "black")
    cat_src = word_positions(backbone.tokenizer, longer.source_prompt, "cat")
    cat_tgt = word_positions(backbone.tokenizer, longer.target_prompt, "cat")
    for _, _, is_cross, maps in controller.recorded:
        if is_cross:
            assert torch.equal(maps[1][..., cat_tgt], maps[0][..., cat_src])
            assert not torch.equal(maps[1][..., black], maps[0][..., black])


def test_processors_are_restored_after_an_error(backbone, sample, method):
    originals = backbone.unet.attn_processors
    inv = inversion(backbone, sample)

    def broken(index):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(backbone, sample, method, inv, uncond=broken)
    assert backbone.unet.attn_processors == originals
    with controlled(backbone.unet, AttentionController()):
        assert backbone.unet.attn_processors != originals
    assert backbone.unet.attn_processors == originals


def test_p2p_costs_four_nfe_per_step_and_draws_attention_maps_on_request(backbone, sample, method):
    inv = inversion(backbone, sample)
    before = backbone.nfe.count
    s = setting(method, attention_maps=True, blend_words="auto")
    result = method.edit(backbone, sample, inv, s, torch.Generator())
    assert backbone.nfe.count - before == 4 * STEPS
    picture = result.artifacts["attention"]
    assert picture.mode == "RGB" and min(picture.size) > 2 * 64  # its contents: tests/test_report_figures.py
    assert method.edit(backbone, sample, inv, setting(method), torch.Generator()).artifacts == {}


def test_p2p_from_noise_follows_the_generator(backbone, sample, method):
    s = setting(method, inversion="none", steps=3)
    assert method.prepare(backbone, sample, s) is None
    one = method.edit(backbone, sample, None, s, torch.Generator().manual_seed(1)).image
    same = method.edit(backbone, sample, None, s, torch.Generator().manual_seed(1)).image
    other = method.edit(backbone, sample, None, s, torch.Generator().manual_seed(2)).image
    assert torch.equal(one, same) and not torch.equal(one, other)


def test_attention_maps_follow_the_backbone_resolution(sample, method):
    wide = Backbone(BackboneSpec(resolution=192))
    big = replace(sample, image=torch.nn.functional.interpolate(sample.image[None], size=192)[0])
    inv = prepare_inversion(wide, big, "ddim", 2).value
    s = method.resolve({"steps": 2, "inversion": "ddim", "blend_words": "auto", "blend_start": 0.0})
    controller = build_controller(wide, big, s)
    p2p_latents(wide, inv.z_T, (big.source_prompt, big.target_prompt), 7.5, controller, 2,
                lambda i: wide.encode_text(""), blend=build_blend(wide.tokenizer, big, s))  # fmt: skip
    assert controller.resolutions() == [24 * 24, 12 * 12]


def test_p2p_rejects_bad_settings_and_samples(backbone, sample, method):
    with pytest.raises(ConfigError, match="cross_replace_words"):
        method.resolve({"cross_replace_words": "dog=0.5"})
    with pytest.raises(ConfigError, match="reweight_word"):
        method.resolve({"edit": "reweight"})
    with pytest.raises(ConfigError, match="blend_words"):
        method.resolve({"blend_words": "cat"})
    longer = replace(sample, target_prompt="a photo of a black cat on a sofa")
    with pytest.raises(SampleError, match="equal token counts"):
        build_controller(backbone, longer, setting(method, edit="replace"))
    with pytest.raises(SampleError, match="'horse' does not occur"):
        build_blend(backbone.tokenizer, sample, setting(method, blend_words="horse:dog"))
    assert method.preparation_key(setting(method, lr=0.5)) == method.preparation_key(setting(method))  # unused by ddim
    nti = setting(method, inversion="null_text")
    assert method.preparation_key(replace_lr(nti)) != method.preparation_key(nti)


def replace_lr(s):
    return {**s, "lr": s["lr"] * 2}


def test_refine_reweight_of_the_blend_word_refines_and_scales_the_target_blend_word(backbone, sample, method):
    # PnPInversion's P2P rows: refine (even for equal token counts) plus the target blend word x2.
    s = setting(method, edit="refine_reweight", reweight_word="blend", blend_words="auto")
    edit = build_controller(backbone, sample, s).cross
    dog = word_positions(backbone.tokenizer, sample.target_prompt, "dog")
    assert edit.mapper is not None and edit.aligned[dog].eq(0).all()
    assert edit.equalizer[dog].eq(2.0).all() and edit.equalizer.sum() == 77 + len(dog)
    no_words = replace(sample, edit_words=None)
    assert build_controller(backbone, no_words, s).cross.equalizer is None  # no blend words: no reweight


def test_missing_words_ignore_runs_with_no_columns(backbone, sample, method):
    s = setting(method, blend_words="horse:dog", missing_words="ignore")
    blend = build_blend(backbone.tokenizer, sample, s)
    assert blend.words[0].sum() == 0 and blend.words[1].sum() > 0
    s = setting(method, edit="reweight", reweight_word="horse", missing_words="ignore")
    assert build_controller(backbone, sample, s).cross.equalizer.eq(1).all()


def test_ddpm_skip_with_source_row_at_inversion_w_retraces_the_source(backbone, sample, method):
    # The source row at the inversion's own guidance, from the stored latent `skip` steps below x_T,
    # with the stored noise maps, lands on the source latent whatever the target row does.
    s = setting(method, inversion="ddpm", skip=2, source_w="inversion_w", blend_words="auto")
    prep = method.prepare(backbone, sample, s).value
    cell = method.cell(backbone, EditRow(sample, prep, torch.Generator()), s)
    latents = p2p_batch_latents(backbone, [cell], s["w"], STEPS, source_w=s["inversion_w"], skip=s["skip"])
    assert (latents[0] - prep.latents[0]).abs().max().item() <= 1e-4
    both_at_w = p2p_batch_latents(backbone, [method.cell(backbone, EditRow(sample, prep, torch.Generator()), s)],
                                  s["w"], STEPS, skip=s["skip"])  # fmt: skip
    assert (both_at_w[0] - prep.latents[0]).abs().max().item() > 1e-3
    with pytest.raises(ConfigError, match="skip"):
        method.resolve({"inversion": "ddim", "skip": 2})


def test_ddpm_zero_last_noise_only_drops_the_last_steps_noise(backbone, sample, method):
    # The authors' code (and PnPInversion's script) zeroes the last noise map: the last DDPM step is
    # then its mean, sigma_last * z_last below the exact step, and nothing before it changes.
    from bench.diffusion.inversion.ddpm import ddpm_sigma

    s = setting(method, inversion="ddpm", source_w="inversion_w", blend_words="none")
    prep = method.prepare(backbone, sample, s).value
    rows = [method.cell(backbone, EditRow(sample, prep, torch.Generator()), setting(method, **{**s, "zero_last_noise": z}))
            for z in (False, True)]
    kept, zeroed = (p2p_batch_latents(backbone, [cell], s["w"], STEPS, source_w=s["inversion_w"]) for cell in rows)
    last_t = backbone.new_scheduler(STEPS).timesteps[-1]
    drop = ddpm_sigma(backbone.new_scheduler(STEPS), last_t) * prep.noise_maps[-1]
    assert (kept - zeroed - drop).abs().max().item() <= 1e-4
    assert drop.abs().max().item() > 1e-3 and torch.equal(rows[0].noise_maps, prep.noise_maps)
