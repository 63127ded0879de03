"""UniEdit-Flow's inversion (Jiao et al., "UniEdit-Flow: Unleashing Inversion and Editing in the Era of
Flow Models", 2025): the ``uniinv`` solver (``flow_solvers.UniInv``) run over only the last
``inverted`` of ``steps`` sampling steps, from the clean latent up to ``s = sigmas[steps - inverted]``,
with the empty prompt.

As the authors' codes (``UniInvEulerScheduler`` with ``alpha``, and ``edit_uniedit`` with
``inverse=True``): the inversion stops where the edit starts (their "delay"), the empty prompt at
guidance 1, and the first evaluation is at ``s = 0`` itself (timestep 0). ``latents[k]`` is the
latent after k inversion steps; ``latents[-1]`` is where the edit starts. Cached on disk like the
other inversions (kind ``uniinv``; ``inverted`` is in the key).
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from bench.diffusion.inversion.ddim import cached_trajectory
from bench.diffusion.inversion.flow_solvers import SOLVERS, solve_inversion
from bench.diffusion.inversion.spec import InversionSpec
from bench.diffusion.sampling import guided_eps
from bench.method import Preparation, cfg_evaluations


@torch.no_grad()
def uniinv_trajectory(backbone, z0: torch.Tensor, prompt: str, steps: int, inverted: int, w: float) -> torch.Tensor:
    """(inverted + 1, ...) latents: ``z0`` inverted over the last ``inverted`` steps of a ``steps``-step schedule."""
    schedule = backbone.new_scheduler(steps, z0.shape[-2:])
    cond, uncond = backbone.encode_text(prompt), backbone.encode_text("")

    def velocity(latent, sigma, evaluation):
        return guided_eps(backbone, latent, schedule.timestep_at(sigma), cond, uncond, w)

    latents, _ = solve_inversion(SOLVERS["uniinv"], velocity, z0, schedule.sigmas[steps - inverted :])
    return latents


@dataclass(frozen=True)
class UniInversionSpec(InversionSpec):
    """The source image inverted by ``uniinv`` over the last ``inverted`` of ``steps`` steps, with the
    empty prompt (``source_prompt``) at guidance ``inversion_w``."""

    kind: ClassVar[str] = "uniinv"
    steps: int
    inverted: int
    inversion_w: float = 1.0
    source_prompt: str | None = ""

    def nfe(self) -> int:
        return SOLVERS["uniinv"].evaluations(self.inverted) * cfg_evaluations(self.inversion_w)

    def cache_params(self) -> dict:
        return {"inversion_w": self.inversion_w, "inverted": self.inverted}

    def prepare(self, backbone, sample) -> Preparation:
        sample = self.source(sample)

        def invert():
            z0 = backbone.encode_image(sample.image[None])
            return uniinv_trajectory(backbone, z0, sample.source_prompt, self.steps, self.inverted, self.inversion_w)

        return cached_trajectory(backbone, sample, self, invert)
