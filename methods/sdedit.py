"""``sdedit``: SDEdit (Meng et al., ICLR 2022) on the shared backbone.

Noise the source latent to time ``t0 * T`` with fresh noise, then denoise with the target
prompt under CFG. Equal to diffusers' ``StableDiffusionImg2ImgPipeline`` with
``strength = t0`` when given the same source latent (tested), and on SD3 and FLUX.1 to their img2img
pipelines, whose start rule the family's schedule keeps (``steps - int(steps - steps * t0)`` steps).
"""

import torch

from bench.diffusion.sampling import (
    decode_rows,
    denoise,
    fresh_noise,
    generators,
    partial_timesteps,
    source_latents,
    split_rows,
    text_guided_eps,
)
from bench.method import Conformance, Method
from bench.params import check_start_level, guidance_param, start_level_param, steps_param
from bench.registry import register


@register
class SDEdit(Method):
    name = "sdedit"
    description = "Noise the source to t0*T, denoise with the target prompt under classifier-free guidance."
    stochastic = True
    conformance = Conformance(settings=({"steps": 3, "t0": 0.7}, {"steps": 2, "t0": 1.0, "w": 1.0}))
    families = ("sd", "sdxl", "sd3", "flux")
    needs = frozenset({"target_prompt"})
    params = (start_level_param(), guidance_param(), steps_param())

    @classmethod
    def check(cls, setting):
        check_start_level(cls.name, setting)

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        scheduler = backbone.new_scheduler(setting["steps"], backbone.latent_hw(rows[0].sample.image))
        timesteps = partial_timesteps(scheduler, setting["steps"], setting["t0"])
        source = source_latents(backbone, rows)
        latent = scheduler.add_noise(source, fresh_noise(source, generators(rows)), timesteps[:1])
        eps = text_guided_eps(backbone, [row.sample.target_prompt for row in rows], setting["w"])
        latent = denoise(scheduler, latent, timesteps, eps, generators(rows))
        return split_rows(decode_rows(backbone, latent))
