"""``ilvr``: Iterative Latent Variable Refinement (Choi et al., ICCV 2021) in SD's latent space.

Generation from noise with the target prompt; while conditioning is on, after each step
``z_s = z'_s - phi_N(z'_s) + phi_N(y_s)`` where ``y_s`` is the source latent noised to ``s``
with fresh noise, so the result shares the source's low frequencies.

``phi_N`` is the antialiased bicubic down-by-N / up-by-N low-pass, made an exact projection:
``phi_N = U (D U)^-1 D`` with D and U the bicubic resizers. Plain ``U D`` is not idempotent
(``phi(phi(z)) != phi(z)``, off by 0.37 at N = 2 on a unit-variance latent), so the paper's
property ``phi_N(z_s) = phi_N(y_s)`` would only hold approximately; the projection keeps the
same pass band and makes it hold exactly.
"""

import torch
import torch.nn.functional as F

from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.sampling import (
    decode_rows,
    denoise,
    fresh_noise,
    generators,
    noise_to,
    source_latents,
    split_rows,
    text_guided_eps,
)
from bench.errors import ConfigError
from bench.method import Conformance, Method
from bench.params import Param, guidance_param, steps_param, whole_steps
from bench.registry import register


def _resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix of 1-D bicubic resizing (antialiased when shrinking), as torch does it."""
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, 1, n_in)
    out = F.interpolate(basis, size=(1, n_out), mode="bicubic", antialias=n_out < n_in, align_corners=False)
    return out.reshape(n_in, n_out).T


class LowPass:
    """``phi_N`` on (B, C, H, W) latents: separable projection onto N-times-downsampled content."""

    def __init__(self, height: int, width: int, factor: int, device, dtype):
        self.rows, self.cols = (self._projection(n, factor).to(device, dtype) for n in (height, width))

    @staticmethod
    def _projection(n: int, factor: int) -> torch.Tensor:
        down, up = _resize_matrix(n, n // factor), _resize_matrix(n // factor, n)
        return up @ torch.linalg.solve(down @ up, down)

    def __call__(self, latent: torch.Tensor) -> torch.Tensor:
        return self.rows @ latent @ self.cols.T


@register
class ILVR(Method):
    name = "ilvr"
    families = UNET_FAMILIES
    description = "Generate with the target prompt while injecting the source's low-pass (factor N) into each step."
    stochastic = True
    conformance = Conformance(
        settings=({"steps": 3, "N": 2, "cond_stop": 0.7}, {"steps": 2, "w": 1.0})
    )
    needs = frozenset({"target_prompt"})
    params = (
        Param("N", int, 4, "downsample factor of the low-pass reference (a power of two dividing the latent size)", low=1),
        Param("cond_stop", float, 1.0, "fraction of the steps that are conditioned (the paper's range)", low=0, high=1,
              step_fraction=True),
        guidance_param(),
        steps_param(),
    )

    @classmethod
    def check(cls, setting):
        n = setting["N"]
        if n & (n - 1):
            raise ConfigError(f"method 'ilvr': parameter 'N' = {n} is not allowed; expected a power of two (1, 2, 4, 8, ...)")

    @classmethod
    def check_backbone(cls, setting, backbone):
        if backbone.latent_size % setting["N"]:
            raise ConfigError(
                f"method 'ilvr': parameter 'N' = {setting['N']} does not divide the latent size {backbone.latent_size}; "
                f"allowed: {', '.join(str(2**k) for k in range(8) if backbone.latent_size % 2**k == 0)}"
            )

    @torch.no_grad()
    def latents(self, backbone, rows, setting, on_step=None) -> torch.Tensor:
        """The final latents of a batch of rows; ``on_step(step, latent, y)`` sees each step's
        result and reference (``y`` is None on unconditioned steps)."""
        scheduler = backbone.new_scheduler(setting["steps"])
        reference = source_latents(backbone, rows)
        phi = LowPass(*reference.shape[-2:], setting["N"], reference.device, reference.dtype)
        conditioned = whole_steps(setting["steps"], setting["cond_stop"])

        def condition(step, latent):
            y = None
            if step.index < conditioned:
                y = noise_to(scheduler, reference, fresh_noise(reference, generators(rows)), step.prev_t)
                latent = latent - phi(latent) + phi(y)
            if on_step is not None:
                on_step(step, latent, y)
            return latent

        eps = text_guided_eps(backbone, [row.sample.target_prompt for row in rows], setting["w"])
        start = fresh_noise(reference, generators(rows)) * scheduler.init_noise_sigma
        return denoise(scheduler, start, scheduler.timesteps, eps, generators(rows), after_step=condition)

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        return split_rows(decode_rows(backbone, self.latents(backbone, rows, setting)))
