"""The reverse-process pieces every method shares (formulas in docs/REFERENCE.md, "Sampling").

``denoise`` is the one stepping loop: it steps the scheduler with a method's noise
prediction and then lets the method correct the new latent (blend with the noised source,
inject a low-pass reference...) through ``after_step``, like diffusers' per-step callbacks.

Every piece works on a batch of cells (``EditRow``s of one setting): text embeddings, source
latents and masks are stacked per row, and noise is drawn per row from the row's own
generator (``fresh_noise`` with a list of generators), so a batch of one is the single-cell case.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from bench.method import EditResult
from bench.params import whole_steps

EpsFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Step:
    """Position in the schedule: step ``index`` goes from timestep ``t`` to ``prev_t`` (less noisy)."""

    index: int
    t: torch.Tensor
    prev_t: int | torch.Tensor


def guided_eps(
    backbone, latent: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, w: float, unet=None
) -> torch.Tensor:
    """CFG: ``eps(z, c0) + w (eps(z, c) - eps(z, c0))``; both predictions in one UNet batch.

    ``w = 1`` is conditional and ``w = 0`` unconditional: each costs a single NFE. ``w`` may
    also be a tensor broadcasting against ``latent`` (one weight per row, e.g. (B, 1, 1, 1)).
    ``unet`` replaces ``backbone.eps`` (same signature), e.g. to add a ControlNet's residuals.
    A family with its own guidance (FLUX's distilled guidance input: ``guided_prediction``) guides its way.
    """
    family_guidance = getattr(getattr(backbone, "family", None), "guided_prediction", None)
    if family_guidance is not None and unet is None:
        return family_guidance(backbone, latent, t, cond, uncond, w)
    unet = unet or backbone.eps
    if isinstance(w, torch.Tensor):
        w = w.to(latent)
    elif w == 1:
        return unet(latent, t, cond.expand(latent.shape[0], -1, -1))
    elif w == 0:
        return unet(latent, t, uncond.expand(latent.shape[0], -1, -1))
    n = latent.shape[0]
    text = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
    eps_uncond, eps_cond = unet(torch.cat([latent, latent]), t, text).chunk(2)
    return eps_uncond + w * (eps_cond - eps_uncond)


def encode_prompts(backbone, prompts: str | list[str]) -> torch.Tensor:
    """(B, L, D) text embeddings, one row per prompt (a single prompt gives one row)."""
    return torch.cat([backbone.encode_text(p) for p in ([prompts] if isinstance(prompts, str) else prompts)])


def text_guided_eps(
    backbone, prompts: str | list[str], w: float, unet_at: Callable[[int], Callable | None] | None = None
) -> EpsFn:
    """The usual noise prediction of an edit: each row's prompt under CFG at weight ``w``.

    ``unet_at(index)``, when given, returns the UNet call of step ``index`` (see ``guided_eps``;
    ``None``: the backbone's own), e.g. with a ControlNet's residuals while it is active."""
    cond, uncond = encode_prompts(backbone, prompts), backbone.encode_text("")
    if unet_at is None:
        return lambda latent, t, index: guided_eps(backbone, latent, t, cond, uncond, w)
    return lambda latent, t, index: guided_eps(backbone, latent, t, cond, uncond, w, unet_at(index))


def fresh_noise(like: torch.Tensor, generator: torch.Generator | list[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn from the cell's (CPU) generator; with a
    list of generators (one per row), each row is drawn from its own, exactly as a batch of one."""
    return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def generators(rows) -> list[torch.Generator]:
    """The generators of a batch's rows."""
    return [row.generator for row in rows]


# The VAE runs one row at a time: its batched convolutions differ from single-image ones by
# ~1e-5 on [0, 1] (kernels chosen by batch size), which would make a cell's image depend on its
# batch; it is one pass per cell, against two UNet passes per step that do run batched.
def source_latents(backbone, rows) -> torch.Tensor:
    """(B, C, h, w) latents of the rows' source images."""
    return torch.cat([backbone.encode_image(row.sample.image[None]) for row in rows])


def decode_rows(backbone, latents: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) fp32 images in [0, 1] of a batch of latents, decoded row by row."""
    return torch.cat([backbone.decode(latent[None]).float() for latent in latents])


def split_rows(images: torch.Tensor) -> list:
    """One ``EditResult`` per row of a (B, 3, H, W) batch of images."""
    return [EditResult(image[None]) for image in images]


def partial_timesteps(scheduler, steps: int, t0: float) -> torch.Tensor:
    """The last ``int(steps * t0)`` timesteps of the schedule (diffusers' img2img ``strength``); a
    schedule with its own img2img rule (``start_steps``: SD3's and FLUX's) keeps that many instead."""
    run = scheduler.start_steps(steps, t0) if hasattr(scheduler, "start_steps") else whole_steps(steps, t0)
    return scheduler.timesteps[(steps - run) * scheduler.order :]


def prev_timestep(scheduler, t) -> int:
    """The timestep a DDIM step from ``t`` lands on (-1 past the end: the clean latent); a flow
    schedule, whose timesteps are not evenly spaced, looks it up (``FlowMatchSchedule``)."""
    if hasattr(scheduler, "prev_timestep"):
        return scheduler.prev_timestep(t)
    return int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


def alpha_bar(scheduler, t: int) -> torch.Tensor:
    """``abar_t``; for ``t < 0`` the schedule's final value (``final_alpha_cumprod``)."""
    return scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod


def noise_to(scheduler, clean: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
    """Forward noising ``sqrt(abar_t) z0 + sqrt(1 - abar_t) n`` (``t < 0``: the clean latent itself);
    a flow schedule (``FlowMatchSchedule``) noises its own way, ``(1 - s) z0 + s n``."""
    if hasattr(scheduler, "noise_to"):
        return scheduler.noise_to(clean, noise, t)
    if t < 0:
        return clean
    abar = alpha_bar(scheduler, t).to(clean.device, clean.dtype)
    return abar.sqrt() * clean + (1 - abar).sqrt() * noise


def renoise(scheduler, latent: torch.Tensor, from_t: int, to_t: int, noise: torch.Tensor) -> torch.Tensor:
    """Forward-noise a latent at ``from_t`` to the noisier ``to_t`` in one jump:
    ``sqrt(abar_to / abar_from) z + sqrt(1 - abar_to / abar_from) n`` (RePaint's resampling)."""
    ratio = (alpha_bar(scheduler, to_t) / alpha_bar(scheduler, from_t)).to(latent.device, latent.dtype)
    return ratio.sqrt() * latent + (1 - ratio).sqrt() * noise


def denoise(
    scheduler,
    latent: torch.Tensor,
    timesteps: torch.Tensor,
    eps_fn: EpsFn,
    generator: torch.Generator | None = None,
    after_step: Callable[[Step, torch.Tensor], torch.Tensor] | None = None,
    noise_maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run DDIM (eta = 0) over ``timesteps``; ``after_step`` may replace each new latent.

    With ``noise_maps`` (per timestep one (C, h, w) map, or one (B, C, h, w) map per row) each step is instead the DDPM step
    (eta = 1) that adds ``sigma_t * noise_maps[index]`` (edit-friendly DDPM inversion)."""
    for index, t in enumerate(timesteps):
        eps = eps_fn(latent, t, index)
        if noise_maps is None:
            latent = scheduler.step(eps, t, latent, eta=0.0, generator=generator).prev_sample
        else:
            noise = noise_maps[index].to(latent.dtype)  # (C, h, w) for every row, or (B, C, h, w) one per row
            noise = noise if noise.ndim == latent.ndim else noise[None]
            latent = scheduler.step(eps, t, latent, eta=1.0, variance_noise=noise).prev_sample
        if after_step is not None:
            latent = after_step(Step(index, t, prev_timestep(scheduler, t)), latent)
    return latent


def keep_noised_source(scheduler, source: torch.Tensor, edit_mask: torch.Tensor, generator: torch.Generator, on_step=None):
    """An ``after_step`` that keeps the new latent inside ``edit_mask`` (1 = edit) and puts the
    source noised to the same level (fresh noise) outside it, as RePaint and Blended Latent
    Diffusion do. ``on_step(step, latent, noised_source)`` sees each blended result."""

    def blend(step: Step, latent: torch.Tensor) -> torch.Tensor:
        noised = noise_to(scheduler, source, fresh_noise(source, generator), step.prev_t)
        latent = edit_mask * latent + (1 - edit_mask) * noised
        if on_step is not None:
            on_step(step, latent, noised)
        return latent

    return blend

