"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov, Michaeli, CVPR 2024).

Method: docs/REFERENCE.md, "Inversion, then regeneration". Every noisy latent
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n_t`` is drawn with its own **independent** noise
``n_t``; then, from t = T down to the first timestep, the noise map
``z_t = (x_{t-1} - mu_t(x_t)) / sigma_t`` is extracted under the source prompt at guidance
``inversion_w``, where ``mu_t + sigma_t z`` is diffusers' DDIM step at eta = 1 (the DDPM
posterior variance). As in the authors' code, ``x_{t-1}`` is then replaced by
``mu_t + sigma_t z_t`` so the stored trajectory is exactly what regeneration computes.
Regenerating from ``x_T`` with the source prompt, the same guidance and the stored maps
reproduces ``x_0``; an edit regenerates with the target prompt from step ``skip``.

Where sources differ: the authors' code (inbarhub/DDPM_inversion, and PnPInversion's copy)
zeroes the last noise map after inversion, so their last step is deterministic and does not
land exactly on ``x_0``; editbench keeps it, as the reference says, so reconstruction is exact
(``p2p``'s ``zero_last_noise`` regenerates with it zeroed, the authors' form).
The ``n_t`` come from a generator seeded by the image hash and ``noise_seed`` (part of the
cache key), so an inversion is the same however and whenever it is computed.
"""

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers.utils.torch_utils import randn_tensor

from bench import cache
from bench.diffusion.inversion.ddim import Inversion
from bench.diffusion.inversion.spec import InversionSpec
from bench.diffusion.sampling import alpha_bar, guided_eps, noise_to, prev_timestep
from bench.method import Preparation


def ddpm_sigma(scheduler, t) -> torch.Tensor:
    """``sigma_t`` of the step t -> s at eta = 1, computed as diffusers' DDIM step computes it."""
    abar_t, abar_s = alpha_bar(scheduler, int(t)), alpha_bar(scheduler, prev_timestep(scheduler, t))
    variance = ((1 - abar_s) / (1 - abar_t)) * (1 - abar_t / abar_s)
    return variance**0.5


@torch.no_grad()
def ddpm_invert(backbone, z0: torch.Tensor, prompt: str, w: float, steps: int, generator: torch.Generator):
    """``(latents, noise_maps)``: ``latents`` (steps + 1, C, h, w) with ``latents[k]`` the latent
    after k of the schedule's steps counted from the clean end (``latents[0]`` = x_0, ``latents[-1]``
    = x_T); ``noise_maps`` (steps, C, h, w) in denoising order (``noise_maps[0]`` is used first)."""
    scheduler = backbone.new_scheduler(steps)
    z0 = z0.float()
    latents = [z0] + [
        noise_to(scheduler, z0, randn_tensor(z0.shape, generator=generator, device=z0.device), int(t))
        for t in scheduler.timesteps.flip(0)
    ]
    cond, uncond = backbone.encode_text(prompt), backbone.encode_text("")
    noise_maps = []
    for index, t in enumerate(scheduler.timesteps):
        k = steps - index  # latents[k] is x_t
        eps = guided_eps(backbone, latents[k].to(backbone.dtype), t, cond, uncond, w).float()
        mu = scheduler.step(eps, t, latents[k], eta=1.0, variance_noise=torch.zeros_like(z0)).prev_sample
        sigma = ddpm_sigma(scheduler, t).to(z0.device)
        noise_maps.append((latents[k - 1] - mu) / sigma)
        latents[k - 1] = mu + sigma * noise_maps[-1]
    return torch.cat(latents), torch.cat(noise_maps)


def noise_generator(sample, noise_seed: int) -> torch.Generator:
    """The generator of a sample's independent ``n_t``: seeded by its image hash and ``noise_seed``."""
    seed = int(hashlib.sha256(f"{sample.image_hash}\0{noise_seed}".encode()).hexdigest()[:15], 16)
    return torch.Generator("cpu").manual_seed(seed)


@dataclass(frozen=True)
class DDPMInversionSpec(InversionSpec):
    """The edit-friendly inversion of a sample at guidance ``inversion_w``, its ``n_t`` drawn from
    ``noise_seed`` (``noise_generator``): an ``Inversion`` of kind ``ddpm`` with ``noise_maps``."""

    kind: ClassVar[str] = "ddpm"
    steps: int
    inversion_w: float = 1.0
    noise_seed: int = 0

    def cache_params(self) -> dict:
        return {"inversion_w": self.inversion_w, "noise_seed": self.noise_seed}

    def prepare(self, backbone, sample) -> Preparation:
        key = self.cache_key(backbone, sample)
        stored = cache.load(key, backbone.device)
        if stored is not None:
            return Preparation(Inversion(self.kind, stored["latents"], noise_maps=stored["noise_maps"]), cache_hit=True)
        z0 = backbone.encode_image(sample.image[None])
        latents, noise_maps = ddpm_invert(
            backbone, z0, sample.source_prompt, self.inversion_w, self.steps, noise_generator(sample, self.noise_seed)
        )
        cache.save(key, {"latents": latents, "noise_maps": noise_maps})
        return Preparation(Inversion(self.kind, latents, noise_maps=noise_maps))
