"""Inversions of a source image: computed once per sample, cached on disk, shared by every edit.

Formulas: docs/REFERENCE.md, "Sampling" and "Inversion, then regeneration". Kinds:

- ``ddim``: DDIM inversion with the source prompt at guidance ``inversion_w`` (default 1),
  giving the trajectory ``z*_0 .. z*_T``; editing regenerates from ``z*_T`` with ``c0``.
- ``negative_prompt`` (Miyake et al. 2023): the same trajectory; editing uses the source
  prompt's embedding as the null embedding at every step.
- ``direct`` (Ju et al., ICLR 2024): the same trajectory; editing adds, after every step, the
  offset between ``z*_s`` and the source branch's CFG step from ``z*_t`` (see ``methods/p2p.py``).
- ``null_text`` (Mokady et al., CVPR 2023): the DDIM trajectory as pivot, then one null
  embedding per step, optimised so that CFG at ``nti.w`` from ``zbar_t`` lands on ``z*_s``.

The first three differ only in how editing uses the trajectory, so they share one cache entry
(``DDIMInversionSpec``); null-text's is ``NullTextInversionSpec`` (``inversion_spec``: kind -> spec).
diffusers' ``DDIMInverseScheduler`` is not used (its timestep off-by-one issues, diffusers
#5145/#5315/#10695): the inversion step below is the DDIM step run forwards on the same
timesteps ``DDIMScheduler`` denoises through, so regeneration retraces them exactly.
"""

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench import cache
from bench.diffusion.inversion.spec import InversionSpec
from bench.diffusion.sampling import (
    alpha_bar,
    decode_rows,
    denoise,
    encode_prompts,
    guided_eps,
    prev_timestep,
    split_rows,
)
from bench.errors import ConfigError, unknown
from bench.method import Preparation, cfg_evaluations

KINDS = ("ddim", "null_text", "negative_prompt", "direct")
#: The kinds that are the DDIM trajectory alone (one cache entry); they differ in how editing uses it.
TRAJECTORY_KINDS = ("ddim", "negative_prompt", "direct")
#: fp16 gradients of a loss near 1e-5 underflow; the loss is scaled for backward and the gradient unscaled.
HALF_LOSS_SCALE = 2.0**12


@dataclass(frozen=True)
class NullTextParams:
    """Null-text optimisation settings; defaults are the reference's.

    Step index ``i`` uses Adam with learning rate ``lr * (1 - lr_decay * i)`` for at most
    ``inner_steps`` iterations, stopping once the loss is below ``early_stop + early_stop_slope * i``.
    """

    w: float = 7.5
    inner_steps: int = 10
    lr: float = 1e-2
    lr_decay: float = 0.01
    early_stop: float = 1e-5
    early_stop_slope: float = 2e-5

    def lr_at(self, i: int) -> float:
        return self.lr * (1 - self.lr_decay * i)

    def threshold_at(self, i: int) -> float:
        return self.early_stop + self.early_stop_slope * i


class Trajectory:
    """What every inversion's ``latents`` (steps + 1, C, h, w) tell: its step count and ``z_T``."""

    latents: torch.Tensor

    @property
    def steps(self) -> int:
        return self.latents.shape[0] - 1

    @property
    def z_T(self) -> torch.Tensor:
        return self.latents[-1:]


@dataclass
class Inversion(Trajectory):
    """An inverted source image.

    ``latents``: (steps + 1, C, h, w), ``latents[k]`` = ``z*`` after k inversion steps
    (``latents[0]`` is the source latent, ``latents[-1]`` is ``z*_T``). ``null_embeddings``:
    (steps, L, D) fp32, one per denoising step in schedule order (``null_text`` only).
    ``noise_maps``: (steps, C, h, w), the DDPM noise of each denoising step in schedule order
    (``ddpm`` only, see ``bench.diffusion.inversion.ddpm``).
    """

    kind: str
    latents: torch.Tensor
    null_embeddings: torch.Tensor | None = None
    noise_maps: torch.Tensor | None = None

    def pivot(self, index: int) -> torch.Tensor:
        """``z*_s`` that denoising step ``index`` (t -> s) should land on, (1, C, h, w)."""
        return self.latents[self.steps - 1 - index][None]

    def uncond(self, backbone, source_prompt: str, index: int) -> torch.Tensor:
        """The null embedding CFG uses at denoising step ``index``."""
        if self.kind == "null_text":
            return self.null_embeddings[index][None].to(backbone.device, backbone.dtype)
        return backbone.encode_text(source_prompt if self.kind == "negative_prompt" else "")


def inversion_step(scheduler, eps: torch.Tensor, s: int, t: int, latent: torch.Tensor) -> torch.Tensor:
    """DDIM step run forwards, s -> t (t noisier): ``sqrt(abar_t) z0_hat + sqrt(1 - abar_t) eps``."""
    abar_s, abar_t = alpha_bar(scheduler, s).float(), alpha_bar(scheduler, t).float()
    z0_hat = (latent.float() - (1 - abar_s).sqrt() * eps.float()) / abar_s.sqrt()
    return (abar_t.sqrt() * z0_hat + (1 - abar_t).sqrt() * eps.float()).to(latent.dtype)


@torch.no_grad()
def ddim_invert(
    backbone, z0: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, steps: int, w: float = 1.0
) -> torch.Tensor:
    """The DDIM inversion trajectory (steps + 1, C, h, w) of ``z0``; eps evaluated at the current latent."""
    scheduler = backbone.new_scheduler(steps)
    latents = [z0]
    for t in scheduler.timesteps.flip(0):
        eps = guided_eps(backbone, latents[-1], t, cond, uncond, w)
        latents.append(inversion_step(scheduler, eps, prev_timestep(scheduler, t), int(t), latents[-1]))
    return torch.cat(latents)


def optimise_null_text(
    backbone, pivot: torch.Tensor, cond: torch.Tensor, params: NullTextParams
) -> tuple[torch.Tensor, int]:
    """Per-step null embeddings (steps, L, D) in fp32, and the number of backward passes.

    One step at a time: the graph of each inner iteration is freed by its backward, and the
    latent carried to the next step is computed without grad, so nothing spans steps. The
    embedding, Adam's state and the loss are fp32 whatever the backbone's dtype; only the UNet
    runs in the backbone's dtype (with a static loss scale for fp16). On SDXL the embedding is
    the packed conditioning (``bench.diffusion.families.packing``), so its pooled token (zeros
    at the start with ``force_zeros_for_empty_prompt``) is optimised too; the authors' code is SD only.
    """
    steps = pivot.shape[0] - 1
    scheduler = backbone.new_scheduler(steps)
    scale = HALF_LOSS_SCALE if backbone.dtype == torch.float16 else 1.0
    null = backbone.encode_text("").float()  # cloned below: Adam updates in place, the text cache must not change
    latent = pivot[-1:]
    nulls, grad_evals = [], 0
    for i, t in enumerate(scheduler.timesteps):
        target = pivot[steps - 1 - i][None].float()
        null = null.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([null], lr=params.lr_at(i))
        with torch.no_grad():
            eps_cond = backbone.eps(latent, t, cond)
        for _ in range(params.inner_steps):
            with torch.enable_grad():
                eps_uncond = backbone.eps(latent, t, null.to(backbone.dtype))
                eps = (eps_uncond + params.w * (eps_cond - eps_uncond)).float()
                stepped = scheduler.step(eps, t, latent.float(), eta=0.0).prev_sample
                loss = F.mse_loss(stepped, target)
                optimiser.zero_grad()
                (loss * scale).backward()
            null.grad /= scale
            optimiser.step()
            grad_evals += 1
            if loss.item() < params.threshold_at(i):
                break
        null = null.detach()
        nulls.append(null)
        with torch.no_grad():
            eps = guided_eps(backbone, latent, t, cond, null.to(backbone.dtype), params.w)
            latent = scheduler.step(eps, t, latent, eta=0.0).prev_sample
    return torch.cat(nulls), grad_evals


def cached_trajectory(backbone, sample, spec: InversionSpec, compute) -> Preparation:
    """``Inversion(spec.kind, latents)`` of ``sample``: the latents from the disk cache under ``spec``'s
    key when it holds them, else ``compute()``'s, saved there (for inversions that are one trajectory)."""
    key = spec.cache_key(backbone, sample)
    stored = cache.load(key, backbone.device)
    if stored is not None:
        return Preparation(Inversion(spec.kind, stored["latents"]), cache_hit=True)
    latents = compute()
    cache.save(key, {"latents": latents})
    return Preparation(Inversion(spec.kind, latents), cache_hit=False)


@dataclass(frozen=True)
class DDIMInversionSpec(InversionSpec):
    """DDIM inversion with the source prompt (or ``source_prompt``) at guidance ``inversion_w``.
    ``kind``: one of ``TRAJECTORY_KINDS``, the ``Inversion.kind`` editing sees; all three are one
    computation under one cache entry (kind ``ddim``)."""

    steps: int
    inversion_w: float = 1.0
    kind: str = "ddim"
    source_prompt: str | None = None

    def __post_init__(self):
        if self.kind not in TRAJECTORY_KINDS:
            raise ConfigError(unknown("DDIM inversion kind", self.kind, TRAJECTORY_KINDS))

    @property
    def cache_kind(self) -> str:
        return "ddim"

    def prepare(self, backbone, sample) -> Preparation:
        sample = self.source(sample)
        cond = backbone.encode_text(sample.source_prompt)

        def invert():
            z0 = backbone.encode_image(sample.image[None])
            return ddim_invert(backbone, z0, cond, backbone.encode_text(""), self.steps, self.inversion_w)

        return cached_trajectory(backbone, sample, self, invert)


@dataclass(frozen=True)
class NullTextInversionSpec(InversionSpec):
    """Null-text inversion: the DDIM trajectory (``DDIMInversionSpec``, loaded from its own cache
    entry when there) as pivot, then the null embeddings ``nti`` optimises. ``cache_hit`` is true
    when nothing had to be computed; ``grad_evals`` counts the optimisation's backward passes."""

    kind: ClassVar[str] = "null_text"
    steps: int
    inversion_w: float = 1.0
    nti: NullTextParams = NullTextParams()
    source_prompt: str | None = None

    def cache_params(self) -> dict:
        return {"inversion_w": self.inversion_w, **asdict(self.nti)}

    @property
    def pivot(self) -> DDIMInversionSpec:
        return DDIMInversionSpec(self.steps, self.inversion_w, source_prompt=self.source_prompt)

    def nfe(self) -> int:
        """The pivot's, and at most ``inner_steps`` forward passes plus the guided step per step."""
        return self.pivot.nfe() + self.steps * (1 + self.nti.inner_steps + cfg_evaluations(self.nti.w))

    def prepare(self, backbone, sample) -> Preparation:
        pivot = self.pivot.prepare(backbone, sample)
        key = self.cache_key(backbone, sample)
        stored = cache.load(key, backbone.device)
        if stored is not None:
            return Preparation(Inversion(self.kind, stored["latents"], stored["null_embeddings"]), cache_hit=True)
        latents = pivot.value.latents
        cond = backbone.encode_text(self.source(sample).source_prompt)
        nulls, grad_evals = optimise_null_text(backbone, latents, cond, self.nti)
        cache.save(key, {"latents": latents, "null_embeddings": nulls})
        return Preparation(Inversion(self.kind, latents, nulls), cache_hit=False, grad_evals=grad_evals)


def inversion_spec(
    kind: str, steps: int, inversion_w: float = 1.0, nti: NullTextParams | None = None, source_prompt: str | None = None
) -> DDIMInversionSpec | NullTextInversionSpec:
    """The spec of the ``kind`` inversion (one of ``KINDS``): null-text's with ``nti`` (default: the
    reference's), which the others, the DDIM trajectory alone, do not depend on."""
    if kind not in KINDS:
        raise ConfigError(unknown("inversion kind", kind, KINDS))
    if kind == NullTextInversionSpec.kind:
        return NullTextInversionSpec(steps, inversion_w, nti or NullTextParams(), source_prompt)
    return DDIMInversionSpec(steps, inversion_w, kind, source_prompt)


def prepare_inversion(
    backbone, sample, kind: str, steps: int, inversion_w: float = 1.0, nti: NullTextParams | None = None
) -> Preparation:
    """The ``kind`` inversion of ``sample``, from the disk cache when it holds one (its ``inversion_spec``'s ``prepare``)."""
    return inversion_spec(kind, steps, inversion_w, nti).prepare(backbone, sample)


@torch.no_grad()
def regenerate_batch(backbone, inversions: list[Inversion], source_prompts: list[str], prompts: list[str], w: float) -> torch.Tensor:
    """Denoise each inversion's ``z*_T`` with its row's ``prompt`` under CFG ``w`` and the
    inversion's null embeddings, as one batch (final latents, one row per inversion)."""
    scheduler = backbone.new_scheduler(inversions[0].steps)
    cond = encode_prompts(backbone, prompts)

    def eps(latent, t, index):
        uncond = torch.cat([inv.uncond(backbone, src, index) for inv, src in zip(inversions, source_prompts)])
        return guided_eps(backbone, latent, t, cond, uncond, w)

    return denoise(scheduler, torch.cat([inv.z_T for inv in inversions]), scheduler.timesteps, eps)


def regenerate(backbone, inversion: Inversion, source_prompt: str, prompt: str, w: float) -> torch.Tensor:
    """``regenerate_batch`` of one inversion (its final latent)."""
    return regenerate_batch(backbone, [inversion], [source_prompt], [prompt], w)


def regenerate_rows(backbone, rows, w: float) -> list:
    """One ``EditResult`` per row (``EditRow`` whose prep is an ``Inversion``): regenerated with
    its sample's target prompt and decoded."""
    latents = regenerate_batch(
        backbone, [row.prep for row in rows], [row.sample.source_prompt for row in rows],
        [row.sample.target_prompt for row in rows], w,
    )  # fmt: skip
    return split_rows(decode_rows(backbone, latents))
