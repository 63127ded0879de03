"""``cfg``: classifier-free guidance (Ho & Salimans, 2022) on the shared backbone.

``eps_w = eps(z, t, c0) + w (eps(z, t, c) - eps(z, t, c0))`` with the sample's target prompt,
both predictions in one UNet batch. ``t0 = 1`` generates from pure noise (equal to diffusers'
``StableDiffusionPipeline``, tested); ``t0 < 1`` starts from the source noised to ``t0 * T``.
Sweeping ``w`` traces the fidelity/diversity trade-off.
"""

from bench.diffusion.guidance import guided_batch, sampler_params
from bench.method import Conformance, Identity, Method
from bench.params import check_start_level
from bench.registry import register


@register
class CFG(Method):
    name = "cfg"
    description = "Classifier-free guidance at weight w (0 unconditional, 1 conditional), from noise or a source."
    conformance = Conformance(
        settings=({"steps": 2, "w": 5.0}, {"steps": 3, "w": 3.0, "t0": 0.6}, {"steps": 2, "w": 0.0}),
        identities=(Identity({"steps": 3, "w": 3.0, "t0": 0.6}, "sdedit", {"steps": 3, "w": 3.0, "t0": 0.6}),),
        draws_noise=True,
    )
    families = ("sd", "sdxl", "sd3", "flux")
    needs = frozenset({"target_prompt"})
    params = sampler_params(w=7.5)

    @classmethod
    def check(cls, setting):
        check_start_level(cls.name, setting)

    def edit_batch(self, backbone, rows, setting):
        return guided_batch(backbone, rows, setting)
