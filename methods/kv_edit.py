"""``kv_edit``: KV-Edit (Zhu, Li, Liu, Cheng, Zheng, "KV-Edit: Training-Free Image Editing for Precise
Background Preservation", 2025) on FLUX.1: a masked edit whose background is the source's exactly.

With ``steps`` sigmas ``s_0 = 1 > ... > s_steps = 0`` and ``k = skip``:

- **inversion** (the preparation): Euler inversion of the source latent with the source prompt at
  guidance ``inversion_w``, from ``s = 0`` up to ``s_k``; the step of sampling index ``j`` (from
  ``s_{j+1}`` up to ``s_j``) records its input latent ``x_j`` and every block's image-token keys and
  values (``bench.diffusion.attention.kv_cache``);
- **edit**, ``j = k .. steps - 1``, from ``z = x_k``: the latent outside the mask is reset to ``x_j``,
  ``z = x_j (1 - m) + z m``; the velocity under the target prompt at guidance ``w``, with the
  background tokens' keys and values those recorded at step ``j`` and ``attn_scale`` added to the
  attention logits of every background key; ``z += (s_{j+1} - s_j) v``;
- the result is ``z0 (1 - m) + z m``: outside the mask the source latent itself.

``m`` is the authors' latent mask: the pixel mask resized bilinearly to the latent, every non-zero
latent pixel counting as 1; a token (2x2 latent pixels) is foreground if any of its pixels is.

Where this follows the paper and where the code (Xilluill/KV-Edit, ``models/kv_edit.py``
``Flux_kv_edit``, ``flux/sampling.py`` ``denoise_kv``): the code is followed. Its step pairing keys
each record by the step's target time, so the edit's step ``j`` (from ``s_j``) sees the inversion's
latent and keys/values at ``s_{j+1}``, one step less noisy than its own, and it starts from
``x_k``, the latent the last inversion step started from (``s_{k+1}``), not the inversion's end:
both as their code runs. They run only the foreground and text tokens through the transformer
while editing; running every token with the background's keys and values replaced gives the same
foreground (``kv_cache``'s docstring says why). ``re_init`` starts instead from
``(1 - s_k) z0 + s_k n`` with fresh noise ``n`` (theirs: the global RNG; here the cell's
generator). ``attn_mask`` is theirs too: during the inversion foreground and background tokens
attend only to the text and to their own region (the text to everything), so the background's
records never saw the foreground. Both guidances are FLUX.1's distilled guidance input, not CFG.

Defaults: the authors' Gradio demo (``gradio_kv_edit.py``): 28 inversion and denoising steps,
``skip_step`` 4, inversion guidance 1.5, denoising guidance 5.5, ``attn_scale`` 1, ``re_init`` and
``attn_mask`` off.
Memory: the records hold every block's image keys and values at every step, on the CPU, as the
authors' (FLUX.1 in bf16: 0.7 GB per step at 512 px, PIE-Bench's size, 17 GB per sample at the
defaults' 24 steps; 2.9 GB per step at 1024 px, 69 GB per sample).
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.diffusion.attention.kv_cache import KVCache, caching_kv
from bench.diffusion.sampling import decode_rows, encode_prompts, fresh_noise, guided_eps, split_rows
from bench.method import Conformance, Method, Preparation, PreparationSpec, cfg_evaluations
from bench.params import Param, check_skip
from bench.registry import register


def kv_latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) {0, 1}: the authors' rule, a bilinear resize of the (1, H, W) pixel mask, non-zero = 1."""
    resized = F.interpolate(mask[None].float(), size=size, mode="bilinear", align_corners=False)
    return (resized > 0).float()


def background_tokens(latent_mask: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: FLUX's 2x2 tokens (row-major, as ``pack_latents``) without any foreground pixel."""
    return (F.max_pool2d(latent_mask, 2) == 0).flatten(1)


@dataclass
class KVInversion:
    """``latents[j]``: the latent the inversion step of sampling index ``j`` started from (``j >= skip``;
    earlier entries unused), ``z0`` the source latent, ``records`` its keys and values per step."""

    z0: torch.Tensor
    latents: dict
    records: dict


@dataclass(frozen=True)
class KVInversionSpec(PreparationSpec):
    """The source's Euler inversion from ``s = 0`` to ``s_skip`` of ``steps`` with its source prompt at
    guidance ``inversion_w``, recording the latents, keys and values (kept in memory only: the
    records are too large for the disk cache); with ``attn_mask``, the mask's regions kept apart."""

    kind: ClassVar[str] = "kv_inversion"
    steps: int
    skip: int
    inversion_w: float
    attn_mask: bool = False

    def nfe(self) -> int:
        return (self.steps - self.skip) * cfg_evaluations(self.inversion_w)

    @torch.no_grad()
    def prepare(self, backbone, sample) -> Preparation:
        schedule = backbone.new_scheduler(self.steps, backbone.latent_hw(sample.image))
        sigmas = schedule.sigmas
        cond, uncond = backbone.encode_text(sample.source_prompt), backbone.encode_text("")
        z0 = backbone.encode_image(sample.image[None])
        separate = background_tokens(kv_latent_mask(sample.mask, z0.shape[-2:])) if self.attn_mask else None
        cache = KVCache.recording(z0.shape[-2] * z0.shape[-1] // 4, separate)
        latent, latents = z0, {}
        with caching_kv(backbone.transformer, cache):
            for j in reversed(range(self.skip, self.steps)):
                cache.at, latents[j] = j, latent
                v = guided_eps(backbone, latent, schedule.timestep_at(sigmas[j + 1]), cond, uncond, self.inversion_w)
                latent = latent + (sigmas[j] - sigmas[j + 1]) * v
        return Preparation(KVInversion(z0, latents, cache.banks[0]))


@torch.no_grad()
def kv_edit_latents(backbone, rows, setting) -> torch.Tensor:
    """The edited latents of a batch of rows (``EditRow``s with masks and ``KVInversion`` preparations)."""
    steps, skip = setting["steps"], setting["skip"]
    schedule = backbone.new_scheduler(steps, backbone.latent_hw(rows[0].sample.image))
    sigmas = schedule.sigmas
    preps = [row.prep for row in rows]
    z0 = torch.cat([p.z0 for p in preps])
    mask = torch.cat([kv_latent_mask(row.sample.mask, z0.shape[-2:]) for row in rows]).to(z0)
    cond, uncond = encode_prompts(backbone, [row.sample.target_prompt for row in rows]), backbone.encode_text("")
    if setting["re_init"]:
        z = (1 - sigmas[skip]) * z0 + sigmas[skip] * fresh_noise(z0, [row.generator for row in rows])
    else:
        z = torch.cat([p.latents[skip] for p in preps])
    cache = KVCache.injecting([p.records for p in preps], background_tokens(mask).cpu(), setting["attn_scale"])
    with caching_kv(backbone.transformer, cache):
        for j in range(skip, steps):
            z = torch.cat([p.latents[j] for p in preps]) * (1 - mask) + z * mask
            cache.at = j
            v = guided_eps(backbone, z, schedule.timesteps[j], cond, uncond, setting["w"])
            z = z + (sigmas[j + 1] - sigmas[j]) * v
    return z0 * (1 - mask) + z * mask


@register
class KVEdit(Method):
    name = "kv_edit"
    description = (
        "KV-Edit: inside the mask, regenerate with the target prompt attending to the background's cached keys and "
        "values; outside it, the source latent."
    )
    conformance = Conformance(
        settings=({"steps": 3, "skip": 1}, {"steps": 4, "skip": 0, "attn_scale": 0.0, "re_init": True, "attn_mask": True}),
    )
    stochastic = True  # only with re_init (noise replaces the inverted latent in the mask): is_stochastic
    needs = frozenset({"target_prompt", "mask"})
    families = ("flux",)
    params = (
        Param("steps", int, 28, "inversion and denoising steps of the schedule (KV-Edit's Gradio demo: 28)",
              low=1, high=1000),
        Param("skip", int, 4, "noisiest steps skipped: inversion and edit run the other steps-skip "
              "(KV-Edit's Gradio demo skip_step: 4)", low=0, high=1000),
        Param("inversion_w", float, 1.5, "FLUX guidance of the inversion, source prompt "
              "(KV-Edit's Gradio demo inversion guidance: 1.5)", low=0, high=50),
        Param("w", float, 5.5, "FLUX guidance of the edit, target prompt (KV-Edit's Gradio demo denoise guidance: 5.5)",
              low=0, high=50),
        Param("attn_scale", float, 1.0, "added to the attention logits of the background keys while editing "
              "(KV-Edit's Gradio demo: 1)", low=0, high=5),
        Param("re_init", bool, False, "start the edit from the source noised with fresh noise instead of the "
              "inversion (KV-Edit's Gradio demo: off)"),
        Param("attn_mask", bool, False, "keep the mask's regions apart in the inversion's attention "
              "(KV-Edit's Gradio demo: off)"),
    )  # fmt: skip

    @classmethod
    def is_stochastic(cls, setting):
        """Fresh noise only with ``re_init``; otherwise the edit starts from the inversion."""
        return setting["re_init"]

    @classmethod
    def check(cls, setting):
        check_skip(cls.name, setting)

    @classmethod
    def schedule(cls, setting):
        return setting["skip"], setting["steps"] - setting["skip"]

    @classmethod
    def preparation(cls, setting):
        return KVInversionSpec(setting["steps"], setting["skip"], setting["inversion_w"], setting["attn_mask"])

    def edit_batch(self, backbone, rows, setting):
        return split_rows(decode_rows(backbone, kv_edit_latents(backbone, rows, setting)))
