"""Inversion and regeneration with a higher-order flow solver (``flow_solvers``), with RF-Solver-Edit's
value sharing (``bench.diffusion.attention.value_sharing``): what ``rf_solver`` and ``fireflow`` run.

``SolverInversionSpec.prepare`` inverts a sample once with its source prompt and caches the trajectory
on disk (and FireFlow's carried velocities). The source's shared values are recorded while the
inversion runs; they are *not* cached on disk: they are per sample, steps, blocks and ``inject``,
and large (SD3.5-medium at 1024 px: 4096 image tokens x 1536 channels in bf16 = 12.6 MB per block
and evaluation, about 400 MB per sample at ``rf_solver``'s defaults, 8 blocks x 2 evaluations x 2
steps; kept in host memory, moved to the device at each injection, as the authors do). On a cache
hit they are recorded again by replaying only the shared inversion steps from the cached
trajectory (``flow_solvers.replay_steps``): the same inputs give the same values, at ``inject`` x
the solver's evaluations per step x CFG NFE instead of the whole inversion's.
"""

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from bench import cache
from bench.diffusion.attention.value_sharing import ValueSharing, shared_blocks, sharing_values
from bench.diffusion.families.sd3 import guided_velocity
from bench.diffusion.inversion.ddim import Trajectory
from bench.diffusion.inversion.flow_solvers import (
    CARRIES,
    SOLVERS,
    replay_steps,
    solve_inversion,
    solve_sampling,
    stack_carried,
    unstack_carried,
)
from bench.diffusion.inversion.spec import InversionSpec
from bench.diffusion.sampling import encode_prompts
from bench.method import Preparation, cfg_evaluations


@dataclass
class SolverInversion(Trajectory):
    """A sample inverted by ``solver``: ``latents`` (steps + 1, C, h, w) as ``Inversion.latents``, and
    the source's recorded values (a ``ValueSharing`` bank; empty without sharing)."""

    solver: str
    latents: torch.Tensor
    values: dict = field(default_factory=dict)


def guided_velocity_fn(
    backbone, schedule, cond, uncond, w: float, sharing: ValueSharing | None = None, inject: int = 0
):
    """The solvers' ``velocity(z, sigma, evaluation)``: CFG ``w`` on ``cond``/``uncond``; with
    ``sharing``, the evaluations of the first ``inject`` steps (sampling order) share values."""

    def velocity(latent, sigma, evaluation):
        if sharing is not None:
            sharing.at = evaluation if evaluation.index < inject else None
        return guided_velocity(backbone, latent, schedule.timestep_at(sigma), cond, uncond, w)

    return velocity


def _recording(backbone, blocks: list[int], inject: int):
    if inject == 0 or not blocks:
        return None, nullcontext()
    sharing = ValueSharing.recording()
    return sharing, sharing_values(backbone.transformer, blocks, sharing)


@dataclass(frozen=True)
class SolverInversionSpec(InversionSpec):
    """A sample inverted by the solver ``kind`` (a ``SOLVERS`` name other than ``euler``, whose
    inversion is ``flow``) with its source prompt at guidance ``inversion_w``, recording the source's
    values in the last ``blocks`` transformer blocks for the first ``inject`` sampling steps (a
    ``SolverInversion``). Only the trajectory is cached, so ``blocks`` and ``inject`` are not in the
    key. Its NFE are the solver's evaluations, times CFG (the recording replay of a cache hit is not
    estimated)."""

    kind: str
    steps: int
    inversion_w: float = 1.0
    blocks: int = 1
    inject: int = 0

    def nfe(self) -> int:
        return SOLVERS[self.kind].evaluations(self.steps) * cfg_evaluations(self.inversion_w)

    def prepare(self, backbone, sample) -> Preparation:
        """The trajectory from the disk cache when it holds one (FireFlow's entry also keeps the
        velocities it carries), with the values recorded as it is computed or replayed."""
        solver, steps, inject = self.kind, self.steps, self.inject
        key = self.cache_key(backbone, sample)
        schedule = backbone.new_scheduler(steps, backbone.latent_hw(sample.image))
        cond, uncond = backbone.encode_text(sample.source_prompt), backbone.encode_text("")
        sharing, recording = _recording(backbone, shared_blocks(backbone.transformer, self.blocks), inject)
        velocity = guided_velocity_fn(backbone, schedule, cond, uncond, self.inversion_w, sharing, inject)
        stored = cache.load(key, backbone.device)
        with recording:
            if stored is not None:
                latents = stored["latents"]
                if sharing is not None:
                    carried = unstack_carried(stored["carried"], steps) if solver in CARRIES else [None] * steps
                    replay_steps(SOLVERS[solver], velocity, latents, carried, schedule.sigmas, range(min(inject, steps)))
            else:
                latents, carried = solve_inversion(
                    SOLVERS[solver], velocity, backbone.encode_image(sample.image[None]), schedule.sigmas
                )
                kept = {"carried": stack_carried(carried)} if solver in CARRIES else {}
                cache.save(key, {"latents": latents, **kept})
        values = {} if sharing is None else sharing.banks[0]
        return Preparation(SolverInversion(solver, latents, values), cache_hit=stored is not None)


@torch.no_grad()
def regenerate_shared(
    backbone, inversions: list[SolverInversion], prompts: list[str], w: float, blocks: list[int] = (), inject: int = 0
) -> torch.Tensor:
    """Solve each inversion's ``z_T`` back with its row's prompt under CFG ``w``, with its own solver,
    as one batch; the first ``inject`` steps take each row's source values at ``blocks``. Final latents."""
    solver, steps = inversions[0].solver, inversions[0].steps
    schedule = backbone.new_scheduler(steps, inversions[0].latents.shape[-2:])
    cond, uncond = encode_prompts(backbone, prompts), backbone.encode_text("")
    sharing = ValueSharing.injecting([inv.values for inv in inversions]) if inject and blocks else None
    installed = nullcontext() if sharing is None else sharing_values(backbone.transformer, list(blocks), sharing)
    velocity = guided_velocity_fn(backbone, schedule, cond, uncond, w, sharing, inject)
    with installed:
        return solve_sampling(SOLVERS[solver], velocity, torch.cat([inv.z_T for inv in inversions]), schedule.sigmas)
