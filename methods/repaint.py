"""``repaint``: RePaint (Lugmayr et al., CVPR 2022) in SD's latent space.

Regenerates the sample's mask region with the target prompt. After each step ``t -> s``
the kept region is replaced by the source latent noised to ``s`` with fresh noise. Each
block of ``j`` steps is run ``r`` times: after all but the last pass the latent is re-noised
from the block's end back to its start in one jump and the block is denoised again, so the
regenerated region harmonises with the kept one; the cost is ``r`` times the NFE.
"""

import torch

from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.masks import latent_masks
from bench.diffusion.sampling import (
    decode_rows,
    denoise,
    fresh_noise,
    generators,
    keep_noised_source,
    prev_timestep,
    renoise,
    source_latents,
    split_rows,
    text_guided_eps,
)
from bench.errors import ConfigError
from bench.method import Conformance, Method
from bench.params import Param, guidance_param, steps_param
from bench.registry import register


@register
class RePaint(Method):
    name = "repaint"
    families = UNET_FAMILIES
    description = "Inpaint the mask region with the target prompt, re-noising and redoing each block of steps r times."
    stochastic = True
    conformance = Conformance(settings=({"steps": 3, "r": 2, "j": 2}, {"steps": 2, "r": 1}))
    needs = frozenset({"target_prompt", "mask"})
    params = (
        Param("r", int, 2, "passes over each block of steps (1 = no resampling)", low=1, high=50),
        Param("j", int, 1, "jump length: steps per resampled block", low=1, high=1000),
        guidance_param(),
        steps_param(),
    )

    @classmethod
    def check(cls, setting):
        if setting["j"] > setting["steps"]:
            raise ConfigError(f"method 'repaint': parameter 'j' = {setting['j']} exceeds steps = {setting['steps']}")

    @classmethod
    def estimate_nfe(cls, setting):
        """Every block of steps is denoised ``r`` times."""
        return setting["r"] * super().estimate_nfe(setting)[0], 0

    @torch.no_grad()
    def latents(self, backbone, rows, setting, on_step=None) -> torch.Tensor:
        """The final latents of a batch of rows; ``on_step(step, latent, known)`` sees every
        step's blended result and the noised source it kept outside the mask."""
        scheduler = backbone.new_scheduler(setting["steps"])
        source = source_latents(backbone, rows)
        edit = latent_masks(backbone, rows).to(source)
        generator = generators(rows)
        blend = keep_noised_source(scheduler, source, edit, generator, on_step)
        eps = text_guided_eps(backbone, [row.sample.target_prompt for row in rows], setting["w"])
        latent = fresh_noise(source, generator) * scheduler.init_noise_sigma
        timesteps = scheduler.timesteps
        for start in range(0, len(timesteps), setting["j"]):
            block = timesteps[start : start + setting["j"]]
            for attempt in range(setting["r"]):
                if attempt:
                    end = prev_timestep(scheduler, block[-1])
                    latent = renoise(scheduler, latent, end, int(block[0]), fresh_noise(source, generator))
                latent = denoise(scheduler, latent, block, eps, generator, after_step=blend)
        return latent

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        return split_rows(decode_rows(backbone, self.latents(backbone, rows, setting)))
