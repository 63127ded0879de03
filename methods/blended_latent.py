"""``blended_latent``: Blended Latent Diffusion (Avrahami et al., SIGGRAPH 2023).

Start from the source noised to ``t0`` (as SDEdit); after each step keep the denoised
latent inside the (latent) mask and the source noised to the same level outside it, so the
edit stays local and the last step ends exactly on the source latent outside the mask. On SD3
the noising is the flow's ``(1 - s) z0 + s n`` at the step's sigma (``sampling.noise_to``).
Optionally paste the source pixels outside the pixel mask after decoding.
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
    partial_timesteps,
    source_latents,
    split_rows,
    text_guided_eps,
)
from bench.method import Conformance, Method
from bench.params import Param, check_start_level, guidance_param, start_level_param, steps_param
from bench.registry import register


@register
class BlendedLatent(Method):
    name = "blended_latent"
    families = (*UNET_FAMILIES, "sd3", "flux")
    description = "Edit inside the mask with the target prompt, blending in the noised source outside it at every step."
    stochastic = True
    conformance = Conformance(
        settings=({"steps": 3, "t0": 0.9, "paste_source": True}, {"steps": 3, "dilation": 2})
    )
    needs = frozenset({"target_prompt", "mask"})
    params = (
        start_level_param(0.8),
        guidance_param(),
        steps_param(),
        Param("dilation", int, 0, "grow the latent mask by this many latent pixels", low=0, high=64),
        Param("paste_source", bool, False, "after decoding, paste the source pixels outside the pixel mask"),
    )

    @classmethod
    def check(cls, setting):
        check_start_level(cls.name, setting)

    @torch.no_grad()
    def latents(self, backbone, rows, setting, on_step=None) -> torch.Tensor:
        """The final latents of a batch of rows; ``on_step(step, latent, background)`` sees every blended step."""
        scheduler = backbone.new_scheduler(setting["steps"], backbone.latent_hw(rows[0].sample.image))
        timesteps = partial_timesteps(scheduler, setting["steps"], setting["t0"])
        source = source_latents(backbone, rows)
        edit = latent_masks(backbone, rows, setting["dilation"]).to(source)
        generator = generators(rows)
        blend = keep_noised_source(scheduler, source, edit, generator, on_step)
        start = scheduler.add_noise(source, fresh_noise(source, generator), timesteps[:1])
        eps = text_guided_eps(backbone, [row.sample.target_prompt for row in rows], setting["w"])
        return denoise(scheduler, start, timesteps, eps, generator, after_step=blend)

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        images = decode_rows(backbone, self.latents(backbone, rows, setting))
        if setting["paste_source"]:
            masks = torch.stack([row.sample.mask for row in rows]).to(images)
            sources = torch.stack([row.sample.image for row in rows]).to(images)
            images = masks * images + (1 - masks) * sources
        return split_rows(images)
