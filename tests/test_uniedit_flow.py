"""``uniedit_flow`` (UniEdit-Flow): its inversion solver on stub fields, and properties that hold for any
weights on the tiny SD3 backbone: with the target prompt equal to the source's the edit is plain Euler
sampling with the source prompt (the velocity difference, hence the mask and the push, vanish); the
inversion runs exactly the steps the edit runs; NFE at the authors' defaults."""

import torch

from bench.data import Sample
from bench.diffusion.inversion.flow_solvers import SOLVERS, solve_inversion, solve_sampling
from bench.diffusion.sampling import guided_eps
from bench.registry import get_method
from methods.uniedit_flow import fusion_mask


def _sample(prompt: str = "a swan on a lake") -> Sample:
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(3))
    return Sample("boat", image, "a boat on a lake", prompt)


def test_uniinv_then_euler_sampling_returns_the_start_on_a_field_of_s_alone():
    """UniInv steps with the velocity at the noisier end, which is where Euler sampling evaluates: on a
    field independent of z the two are exact inverses (Euler inversion is not)."""
    sigmas = torch.tensor([1.0, 0.9375, 0.8571, 0.6923, 0.4286, 0.2, 0.0], dtype=torch.float64)
    velocity = lambda z, s, evaluation: torch.sin(3 * s) + s**2 + 0 * z
    z0 = torch.randn(1, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name, exact in (("uniinv", True), ("euler", False)):
        latents, _ = solve_inversion(SOLVERS[name], velocity, z0, sigmas)
        back = solve_sampling(SOLVERS["euler"], velocity, latents[-1:], sigmas)
        assert torch.allclose(back, z0, atol=1e-6, rtol=0) == exact, name  # Euler steps in fp32


def test_fusion_mask_is_normalised_per_row():
    delta = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    delta[1] *= 10
    mask = fusion_mask(delta)
    assert mask.shape == (2, 1, 5, 5)
    for row in mask:
        assert abs(row.min().item()) < 1e-6 and abs(row.max().item() - 1) < 1e-5
    assert torch.equal(fusion_mask(torch.zeros(1, 4, 5, 5)), torch.zeros(1, 1, 5, 5))


def test_target_equal_to_source_is_euler_sampling_with_the_source_prompt(sd3):
    method = get_method("uniedit_flow")()
    setting = method.resolve({"steps": 5, "alpha": 0.6, "omega": 3.0})
    sample = _sample(prompt="a boat on a lake")
    prep = method.prepare(sd3, sample, setting).value
    assert prep.latents.shape[0] == 3 + 1  # floor(0.6 * 5) = 3 inverted steps
    edited = method.edit(sd3, sample, prep, setting, torch.Generator()).image
    schedule, cond, uncond = sd3.new_scheduler(5), sd3.encode_text(sample.source_prompt), sd3.encode_text("")
    z = prep.z_T
    for i in range(2, 5):
        v = guided_eps(sd3, z, schedule.timesteps[i], cond, uncond, 1.0).float()
        z = (z.float() + (schedule.sigmas[i + 1] - schedule.sigmas[i]) * v).to(z.dtype)
    assert (edited - sd3.decode(z).float()).abs().max() < 1e-5


def test_the_edit_differs_from_the_plain_regeneration(sd3):
    method = get_method("uniedit_flow")()
    setting = method.resolve({"steps": 4, "alpha": 0.5})
    sample = _sample()
    prep = method.prepare(sd3, sample, setting).value
    pushed = method.edit(sd3, sample, prep, setting, torch.Generator()).image
    plain = method.edit(sd3, sample, prep, {**setting, "omega": 0.0}, torch.Generator()).image
    assert (pushed - plain).abs().max() > 1e-3


def test_nfe_at_the_defaults():
    method = get_method("uniedit_flow")
    setting = method.resolve({})
    assert (setting["steps"], setting["alpha"], setting["omega"], setting["w"]) == (15, 0.6, 5.0, 1.0)
    assert method.estimate_nfe(setting) == (9 * 2, 9 + 1)  # 9 edited steps x (source, target); 9 + 1 inverting
    assert method.schedule(setting) == (6, 9)
