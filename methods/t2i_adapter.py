"""``t2i_adapter``: T2I-Adapter (Mou et al., AAAI 2024) beside the shared backbone.

A small adapter turns a condition map of the source image (``canny``, ``grey``, ``blur``, or
``depth``, ``segmentation``, ``pose`` made by a model; ``bench.diffusion.control``) into one feature
map per UNet down block, computed once per cell and added, times ``adapter_scale``, inside
the UNet's encoder at every step. ``t0 = 1`` generates
from noise (equal to diffusers' ``StableDiffusionAdapterPipeline``, tested); ``t0 < 1`` starts
from the source noised to ``t0 * T``. ``adapter_scale = 0`` is plain ``cfg``.
"""

import torch

from bench.diffusion.control import SpatialControlMethod, control_params, controlled_sample, with_channels
from bench.diffusion.guidance import sampler_params
from bench.method import Conformance, Identity
from bench.params import Param
from bench.registry import register


@register
class T2IAdapterMethod(SpatialControlMethod):
    name = "t2i_adapter"
    kind = "t2i_adapter"
    description = ("A T2I-Adapter's features of a condition map of the source (canny, grey, blur; depth, "
                   "segmentation or pose from a model) steer each step.")
    stochastic = True
    conformance = Conformance(
        settings=({"steps": 2, "untrained": True}, {"steps": 3, "untrained": True, "condition": "blur", "t0": 0.7}),
        identities=(Identity({"steps": 2, "untrained": True, "adapter_scale": 0.0}, "cfg", {"steps": 2}),),
    )
    params = (
        *control_params("t2i_adapter", "TencentARC/t2iadapter_canny_sd15v2"),
        Param("adapter_scale", float, 1.0, "weight of the adapter's features (0 = no control)", low=0, high=5),
        *sampler_params(w=7.5),
    )

    @torch.no_grad()
    def edit(self, backbone, sample, prep, setting, generator):
        network = self.network(backbone, setting)
        cond = with_channels(prep, network.model.config.in_channels)[None].to(backbone.device, backbone.dtype)
        scale = setting["adapter_scale"]
        features = [f * scale for f in network.model(cond)] if scale != 0 else []

        def adapted_eps(latent, t, text):
            # the UNet pops the list it is given: a fresh one per call
            residuals = [f.expand(latent.shape[0], -1, -1, -1) for f in features]
            return backbone.eps(latent, t, text, down_intrablock_additional_residuals=residuals)

        unet = adapted_eps if features else None  # scale 0: every feature would be zero
        return controlled_sample(backbone, sample, setting, generator, prep, network, lambda index: unet)
