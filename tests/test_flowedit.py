"""``flowedit`` on the tiny untrained SD3 backbone: properties that hold for any weights (identity
edits, ``n_max = 0``, the ``n_min`` tail as SDEdit, seeded noise), batching and NFE accounting."""

import pytest
import torch

from bench.data import Sample
from bench.errors import ConfigError
from bench.registry import get_method
from methods.flowedit import flowedit_latents
from tests.helpers import cell_rows

STEPS = 6
#: Batched kernels differ from single-row ones by float noise, which CFG at 13.5 extrapolates
#: (measured 1.4e-5 here; tests/test_conformance.py explains it and uses the same bound).
IMAGE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def samples(image):
    return [Sample("cat", image, "a photo of a cat", "a photo of a dog"),
            Sample("car", image.flip(-1), "a red car in the street", "a blue car in an old street")]  # fmt: skip


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=128, mode="bilinear", align_corners=False)[0]


def setting_of(**given):
    return get_method("flowedit").resolve({"steps": STEPS, "n_max": 4, **given})


def latents_of(sd3, sample, setting, target=None, seed=0):
    z0 = sd3.encode_image(sample.image[None])
    target = sample.target_prompt if target is None else target
    return z0, flowedit_latents(
        sd3, z0, [sample.source_prompt], [target], setting, [torch.Generator().manual_seed(seed)]
    )


@pytest.mark.parametrize("given", [{"src_w": 3.5, "tar_w": 3.5}, {"src_w": 1.0, "tar_w": 1.0, "n_avg": 2}])
def test_the_source_prompt_as_target_at_the_source_guidance_returns_the_source_exactly(sd3, samples, given):
    z0, edited = latents_of(sd3, samples[0], setting_of(**given), target=samples[0].source_prompt)
    assert torch.equal(edited, z0)
    # another target, or another target guidance, moves it
    assert not torch.equal(latents_of(sd3, samples[0], setting_of(**given))[1], z0)
    assert not torch.equal(
        latents_of(sd3, samples[0], setting_of(src_w=3.5, tar_w=5.0), target=samples[0].source_prompt)[1], z0
    )


def test_flowedit_is_the_papers_algorithm_on_diffusers_sd3_pieces(sd3, samples):
    """Algorithm 1 of the paper written out over diffusers' own SD3 pieces (the pipeline's prompt
    encoding, its transformer, its scheduler's sigmas) and the same noise draws: edited steps are
    the last ``n_max``, velocities are CFG'd with the empty negative prompt."""
    from diffusers import StableDiffusion3Pipeline

    from tests.test_sd3 import sd3_pipeline

    sample, n_max, src_w, tar_w = samples[1], 4, 3.5, 7.0
    pipe = sd3_pipeline(StableDiffusion3Pipeline, sd3, STEPS)
    pipe.scheduler.set_timesteps(STEPS)
    timesteps, sigmas = pipe.scheduler.timesteps, pipe.scheduler.sigmas

    def guided(latent, t, prompt, w):
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(prompt, None, None, negative_prompt="")
        both = pipe.transformer(
            hidden_states=torch.cat([latent, latent]), timestep=t.expand(2),
            encoder_hidden_states=torch.cat([negative, embeds]), pooled_projections=torch.cat([negative_pooled, pooled]),
            return_dict=False,
        )[0]  # fmt: skip
        uncond, cond = both.chunk(2)
        return uncond + w * (cond - uncond)

    x_src = sd3.encode_image(sample.image[None])
    z_fe, generator = x_src, torch.Generator().manual_seed(4)
    for i in range(STEPS - n_max, STEPS):
        noise = torch.randn(x_src.shape, generator=generator)
        z_src = (1 - sigmas[i]) * x_src + sigmas[i] * noise
        z_tar = z_fe + z_src - x_src
        delta = guided(z_tar, timesteps[i], sample.target_prompt, tar_w) - guided(
            z_src, timesteps[i], sample.source_prompt, src_w
        )
        z_fe = z_fe + (sigmas[i + 1] - sigmas[i]) * delta
    _, ours = latents_of(sd3, sample, setting_of(n_max=n_max, src_w=src_w, tar_w=tar_w), seed=4)
    torch.testing.assert_close(ours, z_fe, atol=1e-4, rtol=1e-4)
    assert (ours - x_src).abs().max() > 0.1  # it did edit


def test_n_max_zero_returns_the_source_and_evaluates_nothing(sd3, samples):
    method = get_method("flowedit")()
    setting = setting_of(n_max=0)
    before = sd3.nfe.count
    result = method.edit(sd3, samples[0], None, setting, torch.Generator().manual_seed(0))
    assert sd3.nfe.count == before and method.estimate_nfe(setting) == (0, 0)
    assert torch.equal(result.image, sd3.decode(sd3.encode_image(samples[0].image[None])).float())


def test_n_min_equal_to_n_max_is_sdedit_from_the_same_noise(sd3, samples):
    """No FlowEdit step runs: the tail noises the source to step T - n_min and samples it with the
    target prompt, which is SDEdit at t0 = n_min / T with the same fresh noise."""
    sample = samples[0]
    flowedit = get_method("flowedit")().edit(
        sd3, sample, None, setting_of(n_max=3, n_min=3, tar_w=4.0), torch.Generator().manual_seed(5)
    )
    sdedit_method = get_method("sdedit")()
    sdedit = sdedit_method.edit(
        sd3,
        sample,
        None,
        sdedit_method.resolve({"steps": STEPS, "t0": 0.5, "w": 4.0}),
        torch.Generator().manual_seed(5),
    )
    assert (flowedit.image - sdedit.image).abs().max().item() <= 1e-6


def test_the_noise_comes_from_the_cells_generator(sd3, samples):
    setting = setting_of()
    _, a = latents_of(sd3, samples[0], setting, seed=1)
    _, b = latents_of(sd3, samples[0], setting, seed=1)
    _, c = latents_of(sd3, samples[0], setting, seed=2)
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-4


@pytest.mark.parametrize(
    "given", [{}, {"n_min": 2, "n_avg": 2}, {"src_w": 1.0, "tar_w": 0.0}, {"n_max": 6, "n_min": 1, "src_w": 0.0}]
)
def test_a_batch_equals_its_cells_run_alone_and_nfe_is_the_estimate(sd3, samples, given):
    method = get_method("flowedit")()
    setting = setting_of(**given)

    def rows():
        return cell_rows(samples)

    before = sd3.nfe.count
    batch = method.edit_batch(sd3, rows(), setting)
    batch_nfe = sd3.nfe.count - before
    edit_nfe, prep_nfe = method.estimate_nfe(setting)
    assert batch_nfe == 4 * edit_nfe and prep_nfe == 0
    for row, together in zip(rows(), batch):
        before = sd3.nfe.count
        (alone,) = method.edit_batch(sd3, [row], setting)
        assert sd3.nfe.count - before == edit_nfe
        assert (together.image - alone.image).abs().max().item() <= IMAGE_TOLERANCE
    assert (batch[0].image - batch[2].image).abs().max() > 1e-3  # two samples
    assert (batch[0].image - batch[1].image).abs().max() > 1e-3  # two seeds: noise is drawn


def test_the_estimate_spells_out_the_authors_count():
    method = get_method("flowedit")
    assert method.estimate_nfe(method.resolve({})) == (33 * 1 * 2 * 2, 0)  # 33 edited steps x n_avg x 2 branches x CFG
    assert method.estimate_nfe(method.resolve({"n_max": 30, "n_min": 5, "n_avg": 3})) == (25 * 3 * 4 + 5 * 2, 0)
    assert method.schedule(method.resolve({})) == (17, 33)


@pytest.mark.parametrize("given,message", [
    ({"n_max": 7}, "n_min = 0, n_max = 7, steps = 6; need n_min <= n_max <= steps"),
    ({"n_max": 2, "n_min": 3}, "n_min = 3, n_max = 2"),
])  # fmt: skip
def test_step_counts_that_cannot_run_are_refused_naming_them(given, message):
    with pytest.raises(ConfigError, match=message):
        setting_of(**given)


def test_defaults_are_the_authors_sd3_config():
    method = get_method("flowedit")
    assert method.families == ("sd3", "flux")
    defaults = method.resolve({})
    assert defaults == {"steps": 50, "n_max": 33, "n_min": 0, "n_avg": 1, "src_w": 3.5, "tar_w": 13.5}
    assert method.resolve({}, "sd3") == defaults  # FLUX's own: tests/test_flux.py
    assert all("FlowEdit's SD3 config" in p.help for p in method.params)


def test_a_run_records_the_nfe_the_dry_run_estimates(sd3, tmp_path):
    from bench.execution.plan import dry_run_text
    from bench.execution.runner import Runner
    from tests.helpers import read_cells, run_config

    config = run_config(tmp_path, {"flowedit": {"steps": 4, "n_max": 3, "n_min": 1, "src_w": 1.0}},
                        backbone={"name": "tiny-sd3"}, seeds=[0, 1])  # fmt: skip
    estimate = 2 * (1 + 2) + 1 * 2  # 2 edited steps x (source at w 1 + target under CFG), 1 tail step under CFG
    assert f"flowedit | — | 4 | 1 | 3 | {estimate}" in dry_run_text(config).splitlines()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Runner(config, run_dir, backbone=sd3, progress=False).run()
    cells = read_cells(run_dir)
    assert (cells["status"] == "ok").all(), cells["error"].dropna().tolist()
    assert len(cells) == 4 and (cells["nfe"] == estimate).all() and (cells["prep_nfe"].fillna(0) == 0).all()
