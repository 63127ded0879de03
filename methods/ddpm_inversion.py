"""``ddpm_inversion``: edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024),
then DDPM regeneration with the target prompt from step ``skip`` with the stored noise maps.

See ``bench/diffusion/inversion/ddpm.py`` for the formulas. Defaults follow PnPInversion's use of it
(source guidance 1, target guidance 7.5, 12 of 50 steps skipped); the authors' own defaults
are 100 steps, source guidance 3.5, target guidance 15 and 36 steps skipped. With the target
prompt equal to the source, ``w = inversion_w`` and ``skip = 0`` it reproduces the source latent.
"""

import torch

from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.inversion.ddpm import DDPMInversionSpec
from bench.diffusion.sampling import denoise, text_guided_eps
from bench.method import Conformance, EditResult, Method
from bench.params import Param, check_skip, guidance_param, steps_param
from bench.registry import register

INVERSION_W = Param("inversion_w", float, 1.0, "guidance weight of the inversion (source prompt)", low=0, high=50)
NOISE_SEED = Param("noise_seed", int, 0, "seed of the independent noisy latents the inversion draws", low=0)


def ddpm_inversion_spec(setting: dict) -> DDPMInversionSpec:
    """The edit-friendly inversion of a resolved setting holding ``steps``, ``inversion_w`` and ``noise_seed``."""
    return DDPMInversionSpec(setting["steps"], setting["inversion_w"], setting["noise_seed"])


@register
class DDPMInversion(Method):
    name = "ddpm_inversion"
    families = UNET_FAMILIES
    description = "Edit-friendly DDPM inversion, regeneration with the target prompt and the stored noise maps."
    stochastic = False
    conformance = Conformance(settings=({"steps": 2, "skip": 1}, {"steps": 3, "skip": 0, "inversion_w": 2.0}))
    needs = frozenset({"target_prompt"})
    params = (
        steps_param(),
        guidance_param(),
        INVERSION_W,
        Param("skip", int, 12, "steps skipped at the noisy end: regeneration starts at step skip", low=0),
        NOISE_SEED,
    )

    @classmethod
    def check(cls, setting):
        check_skip(cls.name, setting)

    @classmethod
    def preparation(cls, setting):
        return ddpm_inversion_spec(setting)

    @torch.no_grad()
    def edit(self, backbone, sample, prep, setting, generator):
        latent = regenerate_ddpm(backbone, prep, sample.target_prompt, setting["w"], setting["skip"])
        return EditResult(backbone.decode(latent.to(backbone.dtype)).float())

    @classmethod
    def schedule(cls, setting):
        """The first ``skip`` timesteps are not run (as ``p2p`` over ``ddpm``)."""
        return setting["skip"], setting["steps"] - setting["skip"]


def regenerate_ddpm(backbone, inversion, prompt: str, w: float, skip: int = 0) -> torch.Tensor:
    """Denoise from the inversion's latent ``skip`` steps below ``x_T`` with ``prompt`` at CFG ``w``,
    adding the stored noise maps; the final latent (float32)."""
    scheduler = backbone.new_scheduler(inversion.steps)
    start = inversion.latents[inversion.steps - skip][None].float()
    eps = text_guided_eps(backbone, prompt, w)

    def eps_fp32(latent, t, index):
        return eps(latent.to(backbone.dtype), t, index).float()

    return denoise(scheduler, start, scheduler.timesteps[skip:], eps_fp32, noise_maps=inversion.noise_maps[skip:])
