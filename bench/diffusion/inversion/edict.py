"""EDICT (Wallace, Gokul, Naik, CVPR 2023): exact inversion with two coupled latent sequences.

Method: docs/REFERENCE.md, "Inversion, then regeneration". One denoising step t -> s with
``a_t = sqrt(abar_s / abar_t)``, ``b_t = sqrt(1 - abar_s) - sqrt(abar_s (1 - abar_t) / abar_t)``
and mixing weight ``p``::

    x' = a_t x_t + b_t eps(y_t, t);  y' = a_t y_t + b_t eps(x', t)
    x_s = p x' + (1 - p) y';         y_s = p y' + (1 - p) x_s

Inversion runs the four lines backwards, each solved for its input. This is exact for any
network in exact arithmetic; in floating point each inverted mixing step amplifies rounding
(the mixing matrix has eigenvalues 1 and ~0.865 at p = 0.93), so the coupled arithmetic here
runs in **float64** (as the authors' code does) and only the UNet runs in the backbone's dtype.
Measured on the tiny backbone (max abs error / max abs latent, source prompt, w 3): float64
1e-14 at 10 steps and 5e-7 at 50; the same arithmetic in float32 is off by 7e-3 already at 10.

Where sources differ: the authors' code (salesforce/EDICT) alternates which sequence is
updated first at every step ("leapfrog" steps); its editing entry point ``EDICT_editing``, which
PnPInversion's script calls with its defaults, runs guidance 3 over only 80% of the schedule
(``init_image_strength`` 0.8; guidance 7 is the default of a reconstruction test function,
``recon_test``, not of editing). editbench follows the
reference's formulas by default (no leapfrog, the full schedule); ``strength`` and ``leapfrog``
select the authors' forms, and the guidance is a parameter. The
edited image is decoded from ``x``, the first sequence, as PnPInversion does. ``EDICT_editing``
builds its own DDIM scheduler (``steps_offset`` 0) rather than the checkpoint's (1 for SD 1.x):
``own_scheduler`` selects it. It also encodes the image with a sample of the VAE posterior (a
CUDA-seeded generator), where editbench takes the mean.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from bench import cache
from bench.diffusion.inversion.spec import InversionSpec
from bench.diffusion.sampling import alpha_bar, guided_eps, prev_timestep
from bench.method import Preparation, cfg_evaluations


def step_coefficients(scheduler, t) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a_t, b_t)`` in float64 for the DDIM step t -> s: ``z_s = a_t z_t + b_t eps``."""
    abar_t = alpha_bar(scheduler, int(t)).double()
    abar_s = alpha_bar(scheduler, prev_timestep(scheduler, t)).double()
    a = (abar_s / abar_t).sqrt()
    b = (1 - abar_s).sqrt() - (abar_s * (1 - abar_t) / abar_t).sqrt()
    return a, b


class _Guided:
    """``eps`` of a float64 latent under one prompt and CFG weight, returned in float64."""

    def __init__(self, backbone, prompt: str, w: float):
        self.backbone, self.w = backbone, w
        self.cond, self.uncond = backbone.encode_text(prompt), backbone.encode_text("")

    def __call__(self, latent: torch.Tensor, t) -> torch.Tensor:
        eps = guided_eps(self.backbone, latent.to(self.backbone.dtype), t, self.cond, self.uncond, self.w)
        return eps.double()


def edict_scheduler(backbone, steps: int, own_scheduler: bool = False):
    """The backbone's scheduler, or with ``own_scheduler`` the one ``EDICT_editing`` builds for
    itself: the same DDIM schedule with ``steps_offset`` 0 (timesteps 980 ... 0 at 50 steps; SD
    1.x's own scheduler config says 1: 981 ... 1)."""
    scheduler = backbone.new_scheduler(steps)
    if own_scheduler and scheduler.config.steps_offset != 0:
        scheduler = type(scheduler).from_config({**scheduler.config, "steps_offset": 0})
        scheduler.set_timesteps(steps, device=backbone.device)
    return scheduler


def run_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The last ``int(strength * steps)`` timesteps of the schedule (``EDICT_editing``'s ``init_image_strength``)."""
    return scheduler.timesteps[steps - int(strength * steps) :]


def _x_first(index: int, leapfrog: bool) -> bool:
    """Whether denoising step ``index`` (counted from the first step run) updates ``x`` before ``y``."""
    return not leapfrog or index % 2 == 0


@torch.no_grad()
def edict_invert(
    backbone, z0: torch.Tensor, prompt: str, w: float, steps: int, p: float, strength: float = 1.0, leapfrog: bool = False,
    own_scheduler: bool = False,
) -> torch.Tensor:
    """The coupled pair ``(x_T, y_T)`` as a (2, C, h, w) float64 tensor, from ``x_0 = y_0 = z0``:
    each denoising step of ``edict_denoise`` (same ``strength`` and ``leapfrog``) solved backwards."""
    scheduler = edict_scheduler(backbone, steps, own_scheduler)
    eps = _Guided(backbone, prompt, w)
    timesteps = run_timesteps(scheduler, steps, strength)
    x = y = z0.double()
    for index in reversed(range(len(timesteps))):
        t = timesteps[index]
        a, b = step_coefficients(scheduler, t)
        y_mid = (y - (1 - p) * x) / p
        x_mid = (x - (1 - p) * y_mid) / p
        if _x_first(index, leapfrog):
            y = (y_mid - b * eps(x_mid, t)) / a
            x = (x_mid - b * eps(y, t)) / a
        else:
            x = (x_mid - b * eps(y_mid, t)) / a
            y = (y_mid - b * eps(x, t)) / a
    return torch.cat([x, y])


@torch.no_grad()
def edict_denoise(
    backbone, pair: torch.Tensor, prompt: str, w: float, steps: int, p: float, strength: float = 1.0, leapfrog: bool = False,
    own_scheduler: bool = False,
) -> torch.Tensor:
    """Denoise the coupled pair (2, C, h, w) with ``prompt`` at CFG ``w`` over the last ``int(strength *
    steps)`` timesteps; with ``leapfrog`` every odd step updates ``y`` before ``x``. The final pair, float64."""
    scheduler = edict_scheduler(backbone, steps, own_scheduler)
    eps = _Guided(backbone, prompt, w)
    x, y = pair.double().chunk(2)
    for index, t in enumerate(run_timesteps(scheduler, steps, strength)):
        a, b = step_coefficients(scheduler, t)
        if _x_first(index, leapfrog):
            x_mid = a * x + b * eps(y, t)
            y_mid = a * y + b * eps(x_mid, t)
        else:
            y_mid = a * y + b * eps(x, t)
            x_mid = a * x + b * eps(y_mid, t)
        x = p * x_mid + (1 - p) * y_mid
        y = p * y_mid + (1 - p) * x
    return torch.cat([x, y])


@dataclass(frozen=True)
class EdictInversionSpec(InversionSpec):
    """The EDICT inversion (x_T, y_T) of a sample with its source prompt at guidance ``inversion_w``
    (``edict_invert``'s parameters); its value is the (2, C, h, w) float64 pair."""

    kind: ClassVar[str] = "edict"
    steps: int
    inversion_w: float
    p: float
    strength: float = 1.0
    leapfrog: bool = False
    own_scheduler: bool = False

    def cache_params(self) -> dict:
        """``own_scheduler`` joins the key only when set, so entries written before it existed stay valid."""
        params = {"inversion_w": self.inversion_w, "p": self.p, "strength": self.strength, "leapfrog": self.leapfrog}
        return {**params, **({"own_scheduler": True} if self.own_scheduler else {})}

    def nfe(self) -> int:
        """Every step run evaluates the UNet once on each sequence (x and y), each under CFG."""
        return 2 * int(self.strength * self.steps) * cfg_evaluations(self.inversion_w)

    def prepare(self, backbone, sample) -> Preparation:
        key = self.cache_key(backbone, sample)
        stored = cache.load(key, backbone.device)
        if stored is not None:
            return Preparation(stored["latents"], cache_hit=True)
        z0 = backbone.encode_image(sample.image[None])
        pair = edict_invert(backbone, z0, sample.source_prompt, self.inversion_w, self.steps, self.p, self.strength,
                            self.leapfrog, self.own_scheduler)  # fmt: skip
        cache.save(key, {"latents": pair})
        return Preparation(pair)
