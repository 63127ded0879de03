"""``controlnet``: ControlNet (Zhang, Rao & Agrawala, ICCV 2023) beside the shared backbone.

A trainable copy of the UNet encoder, fed a condition map of the source image (``canny``,
``grey``, ``blur``, or ``depth``, ``segmentation``, ``pose`` made by a model;
``bench.diffusion.control``), adds ``conditioning_scale`` times its residuals to the
UNet's skip connections and middle block at every step whose position in the run lies in
[``control_start``, ``control_end``] (fractions of the steps run, as diffusers'
``control_guidance_start/end``). ``t0 = 1`` generates from noise (equal to diffusers'
``StableDiffusionControlNetPipeline``); ``t0 < 1`` starts from the source noised to ``t0 * T``
(equal to ``StableDiffusionControlNetImg2ImgPipeline`` with ``strength = t0``). Both tested.
``conditioning_scale = 0`` is ``cfg`` at the same ``t0``, ``w`` and ``steps``.
"""

from bench.diffusion.control import SpatialControlMethod, control_params, controlled_sample, with_channels
from bench.diffusion.guidance import sampler_params
from bench.errors import ConfigError
from bench.method import Conformance, Identity
from bench.params import Param, whole_steps
from bench.registry import register


@register
class ControlNet(SpatialControlMethod):
    name = "controlnet"
    kind = "controlnet"
    description = ("A ControlNet fed a condition map of the source (canny, grey, blur; depth, segmentation or pose "
                   "from a model) steers generation or an edit.")
    stochastic = True
    conformance = Conformance(
        settings=({"steps": 2, "untrained": True}, {"steps": 3, "untrained": True, "condition": "grey", "t0": 0.7}),
        identities=(Identity({"steps": 2, "untrained": True, "conditioning_scale": 0.0}, "cfg", {"steps": 2}),),
    )
    params = (
        *control_params("controlnet", "lllyasviel/sd-controlnet-canny"),
        Param("conditioning_scale", float, 1.0, "weight of the ControlNet's residuals (0 = no control)", low=0, high=5),
        Param("control_start", float, 0.0, "fraction of the steps run before which it is off", low=0, high=1),
        Param("control_end", float, 1.0, "fraction of the steps run after which it is off", low=0, high=1),
        *sampler_params(w=7.5),
    )

    @classmethod
    def check(cls, setting):
        super().check(setting)
        if setting["control_start"] > setting["control_end"]:
            start, end = setting["control_start"], setting["control_end"]
            raise ConfigError(f"method {cls.name!r}: control_start = {start} is after control_end = {end}")

    def edit(self, backbone, sample, prep, setting, generator):
        network = self.network(backbone, setting)
        cond = with_channels(prep, network.model.config.conditioning_channels)[None].to(backbone.device, backbone.dtype)
        n, scale = whole_steps(setting["steps"], setting["t0"]), setting["conditioning_scale"]

        def controlled_eps(latent, t, text):
            control = cond.expand(latent.shape[0], -1, -1, -1)
            down, mid = network.model(latent, t, encoder_hidden_states=text, controlnet_cond=control,
                                      conditioning_scale=scale, return_dict=False)  # fmt: skip
            return backbone.eps(latent, t, text, down_block_additional_residuals=down,
                                mid_block_additional_residual=mid)  # fmt: skip

        def unet_at(index):
            active = setting["control_start"] <= index / n and (index + 1) / n <= setting["control_end"]
            return controlled_eps if active and scale != 0 else None  # off: residuals would all be zero

        return controlled_sample(backbone, sample, setting, generator, prep, network, unet_at)
