"""RF-Inversion's controlled ODEs (Rout et al., "Semantic Image Inversion and Editing using Rectified
Stochastic Differential Equations", ICLR 2025) on a rectified-flow backbone (SD3).

Formulas: docs/REFERENCE.md, "Rectified-flow backbones (SD3 / SD3.5)". Both ODEs mix the network's
velocity ``v`` with the velocity of the straight path from the current latent ``z`` (noise level
``s``) to a fixed end point ``e`` reached at noise level ``s_e``, ``(e - z) / (s_e - s)``
(``controlled``):

- inversion (the paper's controlled forward ODE, Algorithm 1): ``flow_invert``'s Euler steps from
  the source latent up to ``s = 1`` with ``v + gamma ((y1 - z) / (1 - s) - v)``, ``y1`` a noise
  sample; ``gamma = 0`` is plain flow inversion;
- editing (the controlled reverse ODE, Algorithm 2): Euler sampling from the inverted latent with the
  target prompt under CFG, with ``v + eta ((z - z0) / s - v)`` (the straight path back to the
  source latent ``z0`` at ``s = 0``) on the steps ``int(start T) <= i < int(stop T)`` and plain
  ``v`` elsewhere; ``eta = 0`` is plain sampling.

Where this follows the paper, diffusers' community ``pipeline_flux_rf_inversion.py`` (FLUX) and the
SD3 port (Sarim-MBZUAI/rf-inversion-sd3):

- the inversion's velocity is the empty prompt's, as in the paper and both codes
  (``inversion_w = 0``); ``inversion_w = 1`` uses the source prompt's, as ``flow_inversion`` does;
- the inversion's discretisation (``times``): ``shifted`` is the SD3 port's, which is
  ``flow_invert``'s: the shifted sigmas, each velocity and field taken at the current, less noisy
  point, so ``gamma = 0`` is exactly ``flow_inversion`` (tested). ``diffusers`` is diffusers' FLUX
  pipeline's (``invert``): at step ``i`` of ``N`` the network and the field see the unshifted time
  ``t_i = i / (N + 1)`` while the step is the shifted sigma gap ``s_i - s_{i+1}`` taken from the
  noisy end first (``diffusers_rf_invert``); the method's default on FLUX;
- the reverse window is diffusers' ``start_timestep``/``stop_timestep`` as fractions of the steps;
- diffusers draws ``y1`` from the unseeded global RNG and the SD3 port after ``torch.manual_seed``;
  here it comes from a generator seeded by the image hash and ``noise_seed``
  (``bench.diffusion.inversion.ddpm.noise_generator``), so the cached inversion is one per
  sample, ``gamma`` and ``noise_seed`` (all in its cache key).
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers.utils.torch_utils import randn_tensor

from bench.diffusion.families.sd3 import euler_step, guided_velocity, velocity_fn
from bench.diffusion.inversion.ddim import Inversion, cached_trajectory
from bench.diffusion.inversion.ddpm import noise_generator
from bench.diffusion.inversion.flow import flow_invert
from bench.diffusion.inversion.spec import InversionSpec
from bench.diffusion.sampling import denoise
from bench.method import Preparation


def controlled(
    velocity: torch.Tensor, latent: torch.Tensor, end: torch.Tensor, end_sigma: float, sigma, strength: float
):
    """``v + strength ((end - z) / (end_sigma - sigma) - v)`` in fp32; ``v`` itself at strength 0."""
    if strength == 0:
        return velocity
    field = (end.float() - latent.float()) / (end_sigma - sigma)
    return velocity.float() + strength * (field - velocity.float())


#: The inversion's discretisations (module docstring): the SD3 port's and diffusers' FLUX pipeline's.
INVERSION_TIMES = ("shifted", "diffusers")


def rf_invert(
    backbone, sample, steps: int, inversion_w: float, gamma: float, noise_seed: int, times: str = "shifted"
) -> torch.Tensor:
    """The controlled inversion trajectory of ``sample`` (steps + 1, C, h, w), as ``flow_invert``'s."""
    z0 = backbone.encode_image(sample.image[None])
    y1 = randn_tensor(z0.shape, generator=noise_generator(sample, noise_seed), device=z0.device, dtype=z0.dtype)
    cond, uncond = backbone.encode_text(sample.source_prompt), backbone.encode_text("")
    if times == "diffusers":
        return diffusers_rf_invert(backbone, z0, y1, cond, uncond, steps, inversion_w, gamma)

    def towards_noise(latent, sigma, velocity):
        return controlled(velocity, latent, y1, 1.0, sigma, gamma)

    return flow_invert(backbone, z0, cond, uncond, steps, inversion_w, control=towards_noise)


@torch.no_grad()
def diffusers_rf_invert(backbone, z0, y1, cond, uncond, steps: int, w: float, gamma: float) -> torch.Tensor:
    """diffusers' ``RFInversionFluxPipeline.invert``: ``Y += (s_i - s_{i+1}) (u + gamma ((y1 - Y) / (1 - t_i) - u))``
    with ``u`` the velocity at the unshifted time ``t_i = i / (N + 1)``, for ``i = 0 .. N - 1``."""
    sigmas = backbone.new_scheduler(steps, z0.shape[-2:]).sigmas
    latents = [z0]
    for i in range(steps):
        t = i / (steps + 1)
        velocity = guided_velocity(backbone, latents[-1], 1000 * t, cond, uncond, w)
        velocity = controlled(velocity, latents[-1], y1, 1.0, t, gamma)
        latents.append(euler_step(latents[-1], velocity, sigmas[i + 1], sigmas[i]))
    return torch.cat(latents)


@dataclass(frozen=True)
class RFInversionSpec(InversionSpec):
    """RF-Inversion's controlled inversion of a sample (``rf_invert``; an ``Inversion`` of kind ``rf``)."""

    kind: ClassVar[str] = "rf"
    steps: int
    inversion_w: float
    gamma: float
    noise_seed: int
    times: str = "shifted"

    def cache_params(self) -> dict:
        params = {"inversion_w": self.inversion_w, "noise_seed": self.noise_seed, "gamma": self.gamma}
        return params if self.times == "shifted" else {**params, "times": self.times}  # shifted: keys as before

    def prepare(self, backbone, sample) -> Preparation:
        return cached_trajectory(
            backbone, sample, self,
            lambda: rf_invert(backbone, sample, self.steps, self.inversion_w, self.gamma, self.noise_seed, self.times),
        )  # fmt: skip


@torch.no_grad()
def rf_regenerate(
    backbone, inversions: list[Inversion], prompts: list[str], w: float, eta: float, start: int, stop: int
) -> torch.Tensor:
    """The controlled reverse ODE from each inversion's ``z*_T`` with its row's prompt under CFG ``w``,
    steered towards its source latent by ``eta`` on the steps ``start <= i < stop`` (final latents)."""
    schedule = backbone.new_scheduler(inversions[0].steps, inversions[0].latents.shape[-2:])
    velocity = velocity_fn(backbone, prompts, w)
    source = torch.cat([inversion.latents[:1] for inversion in inversions])

    def towards_source(latent, t, index):
        v = velocity(latent, t, index)
        return controlled(v, latent, source, 0.0, schedule.sigmas[index], eta if start <= index < stop else 0.0)

    return denoise(schedule, torch.cat([inversion.z_T for inversion in inversions]), schedule.timesteps, towards_source)
