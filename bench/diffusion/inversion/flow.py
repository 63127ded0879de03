"""Flow inversion (docs/REFERENCE.md, "Rectified-flow backbones (SD3 / SD3.5)"): the flow counterpart of DDIM inversion.

The Euler ODE is run from ``s = 0`` (the source latent) up to ``s = 1`` with the source prompt,
the velocity evaluated at the current, less noisy point:
``z_i = z_{i+1} + (s_i - s_{i+1}) v(z_{i+1}, s_{i+1}, c_src)``, over the same shifted sigmas the
sampler denoises through, so regeneration (``bench.diffusion.inversion.ddim.regenerate_batch``,
whose loop steps a ``FlowMatchSchedule``) retraces them. Cached on disk like the other inversions.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from bench.diffusion.families.sd3 import euler_step, guided_velocity
from bench.diffusion.inversion.ddim import cached_trajectory
from bench.diffusion.inversion.spec import InversionSpec
from bench.method import Preparation


@torch.no_grad()
def flow_invert(
    backbone, z0: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, steps: int, w: float = 1.0, control=None
) -> torch.Tensor:
    """The inversion trajectory (steps + 1, C, h, w): ``[0]`` is ``z0``, ``[-1]`` the latent at ``s = 1``.

    ``control(latent, sigma, velocity)``, when given, replaces each velocity before its step
    (RF-Inversion's controller, ``bench.diffusion.inversion.rf``)."""
    schedule = backbone.new_scheduler(steps, z0.shape[-2:])
    sigmas = schedule.sigmas
    latents = [z0]
    for i in reversed(range(steps)):
        velocity = guided_velocity(backbone, latents[-1], schedule.timestep_at(sigmas[i + 1]), cond, uncond, w)
        if control is not None:
            velocity = control(latents[-1], sigmas[i + 1], velocity)
        latents.append(euler_step(latents[-1], velocity, sigmas[i + 1], sigmas[i]))
    return torch.cat(latents)


@dataclass(frozen=True)
class FlowInversionSpec(InversionSpec):
    """The flow inversion of a sample with its source prompt at guidance ``inversion_w`` (an
    ``Inversion`` of kind ``flow``)."""

    kind: ClassVar[str] = "flow"
    steps: int
    inversion_w: float = 1.0

    def prepare(self, backbone, sample) -> Preparation:
        def invert():
            z0 = backbone.encode_image(sample.image[None])
            cond, uncond = backbone.encode_text(sample.source_prompt), backbone.encode_text("")
            return flow_invert(backbone, z0, cond, uncond, self.steps, self.inversion_w)

        return cached_trajectory(backbone, sample, self, invert)
