"""``instruct_pix2pix``: InstructPix2Pix (Brooks, Holynski & Efros, CVPR 2023).

Edits from the sample's instruction ("make it a watercolor") with its own UNet, whose 8 input
channels take the noisy latent and the source latent, beside the backbone's VAE and text
encoder when they fit it, else with the checkpoint pipeline's own (``bench.diffusion.extra_networks``;
their weights join the fingerprint); checked before any cell. Starting from pure noise, each DDIM step
combines three predictions in one UNet batch (the paper's eq. 3):
``eps = eps(z, 0, 0) + image_w (eps(z, I, 0) - eps(z, 0, 0)) + w (eps(z, I, c) - eps(z, I, 0))``,
where ``I`` is the source latent (the VAE posterior's mode, unscaled, as the checkpoint was
trained), ``0`` a zero latent or the empty prompt, ``c`` the instruction. Equal to diffusers'
``StableDiffusionInstructPix2PixPipeline`` (tested), except that diffusers drops guidance
altogether when ``w <= 1`` or ``image_w < 1``, while here the formula holds at every weight;
``w = image_w = 1`` is the conditional prediction alone (1 NFE per step instead of 3).
"""

import torch

from bench.diffusion.extra_networks import check_compatible, network_of, network_params
from bench.diffusion.sampling import denoise, fresh_noise
from bench.method import Conformance, EditResult, Method
from bench.params import Param, guidance_param, steps_param
from bench.registry import register


@register
class InstructPix2Pix(Method):
    name = "instruct_pix2pix"
    description = "Edit by the sample's instruction with InstructPix2Pix's 8-channel UNet (text and image guidance)."
    stochastic = True
    conformance = Conformance(
        settings=({"steps": 2, "untrained": True}, {"steps": 2, "untrained": True, "w": 1.0, "image_w": 1.0}),
    )
    needs = frozenset({"instruction"})
    params = (
        *network_params("instruct_pix2pix", "timbrooks/instruct-pix2pix"),
        guidance_param(7.5),
        Param("image_w", float, 1.5, "image guidance weight (1 = plain image conditioning)", low=0, high=50),
        steps_param(),
    )

    @classmethod
    def check_backbone(cls, setting, backbone):
        check_compatible(backbone, network_of(backbone, cls.name, setting))

    @classmethod
    def estimate_nfe(cls, setting):
        """One UNet batch of three rows a step (instruction and image, image only, neither); one row at
        ``w`` = ``image_w`` = 1."""
        rows = 1 if setting["w"] == 1 and setting["image_w"] == 1 else 3
        return setting["steps"] * rows, 0

    @torch.no_grad()
    def edit(self, backbone, sample, prep, setting, generator):
        network = network_of(backbone, self.name, setting)
        unet, w, image_w = network.model, setting["w"], setting["image_w"]
        parts = network.components or backbone  # the VAE, text encoder and scheduler it works with
        scheduler = parts.new_scheduler(setting["steps"])
        source = parts.encode_image(sample.image[None]) / parts.vae.config.scaling_factor
        latent = fresh_noise(source, generator) * scheduler.init_noise_sigma
        instruction, null = parts.encode_text(sample.instruction), parts.encode_text("")

        def eps(latent, t, index):
            if w == 1 and image_w == 1:
                return unet(torch.cat([latent, source], 1), t, encoder_hidden_states=instruction).sample
            images = torch.cat([source, source, torch.zeros_like(source)])
            inputs = torch.cat([latent.expand(3, -1, -1, -1), images], 1)
            text = torch.cat([instruction, null, null])
            eps_text, eps_image, eps_uncond = unet(inputs, t, encoder_hidden_states=text).sample.chunk(3)
            return eps_uncond + w * (eps_text - eps_image) + image_w * (eps_image - eps_uncond)

        latent = denoise(scheduler, latent, scheduler.timesteps, eps, generator)
        return EditResult(parts.decode(latent).float(), labels=list(network.labels))
