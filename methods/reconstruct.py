"""``reconstruct``: VAE encode and decode of the source, the fidelity ceiling of every table."""

import torch

from bench.method import Conformance, EditResult, Method
from bench.registry import register


@register
class Reconstruct(Method):
    name = "reconstruct"
    families = ("sd", "sdxl", "sd3", "flux")
    description = "VAE round trip of the source image (no diffusion): the best fidelity any latent method can reach."
    conformance = Conformance(settings=({},))

    @torch.no_grad()
    def edit(self, backbone, sample, prep, setting, generator):
        latent = backbone.encode_image(sample.image[None])
        return EditResult(backbone.decode(latent).float())
