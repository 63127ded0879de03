"""``edict``: EDICT exact inversion with the source prompt, then coupled regeneration with the
target prompt (PnPInversion's "edict + direct forward"). See ``bench/diffusion/inversion/edict.py`` for the
formulas, the float64 arithmetic and where the authors' code differs.

With the target prompt equal to the source and ``w = inversion_w`` it returns the source latent
to float64 rounding. Cost: 2 UNet evaluations per step and sequence pair (x and y), each
doubled by CFG.
"""

import torch

from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.inversion.edict import EdictInversionSpec, edict_denoise
from bench.method import Conformance, EditResult, Method, cfg_evaluations
from bench.params import Param, guidance_param, steps_param
from bench.registry import register


@register
class Edict(Method):
    name = "edict"
    families = UNET_FAMILIES
    description = "EDICT exact coupled inversion with the source prompt, regeneration with the target prompt."
    stochastic = False
    conformance = Conformance(
        settings=({"steps": 2}, {"steps": 4, "strength": 0.5, "w": 1.0, "inversion_w": 2.75, "leapfrog": True})
    )
    needs = frozenset({"target_prompt"})
    params = (
        steps_param(),
        guidance_param(3.0),
        Param("inversion_w", float, 3.0, "guidance weight of the inversion (w = inversion_w reconstructs exactly)", low=0, high=50),
        Param("p", float, 0.93, "mixing weight of the coupled sequences", low=0.5, high=1, low_open=True),
        Param("strength", float, 1.0, "fraction of the schedule inverted and denoised (EDICT_editing's "
              "init_image_strength, 0.8 in PnPInversion's script; the reference: 1)", low=0, high=1, low_open=True),
        Param("leapfrog", bool, False, "alternate which sequence is updated first at every step (the authors' code "
              "and PnPInversion's; the reference's formulas: no)"),
        Param("own_scheduler", bool, False, "EDICT_editing's own DDIM scheduler, steps_offset 0 (the authors' code and "
              "PnPInversion's), instead of the backbone's (SD 1.x: 1)"),
    )

    @classmethod
    def schedule(cls, setting):
        """``strength`` runs only the last ``int(strength * steps)`` timesteps."""
        run = int(setting["strength"] * setting["steps"])
        return setting["steps"] - run, run

    @classmethod
    def estimate_nfe(cls, setting):
        """Every step evaluates the UNet once on each sequence (x and y), each under CFG; the
        inversion likewise at ``inversion_w`` (``EdictInversionSpec.nfe``)."""
        run = cls.schedule(setting)[1]
        return 2 * run * cfg_evaluations(setting["w"]), cls.preparation_nfe(setting)

    @classmethod
    def preparation(cls, setting):
        return EdictInversionSpec(setting["steps"], setting["inversion_w"], setting["p"], setting["strength"],
                                  setting["leapfrog"], setting["own_scheduler"])  # fmt: skip

    @torch.no_grad()
    def edit(self, backbone, sample, prep, setting, generator):
        pair = edict_denoise(backbone, prep, sample.target_prompt, setting["w"], setting["steps"], setting["p"],
                             setting["strength"], setting["leapfrog"], setting["own_scheduler"])  # fmt: skip
        return EditResult(backbone.decode(pair[:1].to(backbone.dtype)).float())
