"""``fireflow`` on the tiny SD3 backbone, what is its own (the machinery it shares with ``rf_solver``
is tested in ``tests/test_rf_solver.py``, parametrised over both): the cache entry keeps the velocity
carried into each inversion step, so any step replays exactly from the cache alone; the values it
shares are those of the evaluations the inversion ran (its reused first evaluations are not); its
NFE at the defaults."""

import torch

from bench import cache
from bench.data import Sample
from bench.diffusion.families.sd3 import guided_velocity
from bench.diffusion.inversion.flow_solvers import FIRST, MID, SOLVERS, Evaluation, unstack_carried
from bench.diffusion.inversion.solver_inversion import SolverInversionSpec
from bench.registry import get_method

STEPS = 4


def _sample(backbone_resolution: int = 128) -> Sample:
    low = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    image = torch.nn.functional.interpolate(low, size=backbone_resolution, mode="bilinear", align_corners=False)[0]
    return Sample("boat", image, "a boat on a lake", "a swan on a lake")


def test_every_inversion_step_replays_exactly_from_the_cache_entry(tmp_path, monkeypatch):
    from bench.diffusion.backbone import Backbone, BackboneSpec

    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path))
    sd3, sample = Backbone(BackboneSpec(name="tiny-sd3", device="cpu")), _sample()
    method = get_method("fireflow")()
    setting = method.resolve({"steps": STEPS, "inject": STEPS, "inversion_w": 2.0})
    prep = method.prepare(sd3, sample, setting).value
    # the values are those of the evaluations the inversion ran: every midpoint, and the one fresh first evaluation
    assert {ev for ev, _ in prep.values} == {Evaluation(i, MID) for i in range(STEPS)} | {Evaluation(STEPS - 1, FIRST)}
    stored = cache.load(SolverInversionSpec("fireflow", STEPS, 2.0).cache_key(sd3, sample))
    assert stored["carried"].shape == (STEPS - 1, 16, 16, 16)
    schedule, cond, uncond = sd3.new_scheduler(STEPS), sd3.encode_text(sample.source_prompt), sd3.encode_text("")
    velocity = lambda z, sigma, ev: guided_velocity(sd3, z, schedule.timestep_at(sigma), cond, uncond, 2.0)
    latents, carried, sigmas = stored["latents"], unstack_carried(stored["carried"], STEPS), schedule.sigmas
    for k in range(STEPS):
        index = STEPS - 1 - k
        step, _ = SOLVERS["fireflow"].step(
            velocity, latents[k][None], sigmas[index + 1], sigmas[index], index, carried[k]
        )
        assert torch.equal(step, latents[k + 1][None]), k


def test_nfe_at_the_defaults():
    method = get_method("fireflow")
    setting = method.resolve({})
    assert (setting["steps"], setting["inject"], setting["blocks"]) == (8, 1, 16)
    assert method.estimate_nfe(setting) == ((8 + 1) * 2, 8 + 1)  # CFG at w = 7; inversion at w = 1
