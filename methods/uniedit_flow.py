"""``uniedit_flow``: UniEdit-Flow (Jiao, Chen, Dong, Lin, Yang, "UniEdit-Flow: Unleashing Inversion and
Editing in the Era of Flow Models", 2025), on SD3 and FLUX.1.

With ``steps`` sigmas ``s_0 = 1 > ... > s_steps = 0`` and ``n = floor(alpha steps)``:

- **inversion** (``bench.diffusion.inversion.uniinv``): the source latent is inverted with the empty
  prompt over the last ``n`` steps only, up to ``s_{steps-n}``, each step predicting its end point
  with the carried velocity and stepping with the velocity there (``n + 1`` NFE);
- **edit** ("Uni-Edit"), for ``i = steps - n .. steps - 1``: ``v_s``, ``v_t`` the velocities of the
  source and target prompts at the same latent (one batch), ``d = v_t - v_s``, ``m`` the min-max
  normalised channel mean of ``d`` (per row), and
  ``z += omega h (1 + m) d + h (m v_t + (1 - m) v_s)`` with ``h = s_{i+1} - s_i``: the fused velocity
  follows the target where the prompts disagree, and ``omega`` pushes along their difference.

Where this follows the paper and where the code: the authors have two implementations that differ
in two details, and ``variant`` picks one. ``diffusers`` (``UniEdit-Flow_diffusers``:
``UniInvEulerScheduler``, ``UniEditEulerScheduler``, ``demo_edit.py``; the default on SD3):
``n = floor(alpha steps)``, ``m`` from the *signed* channel mean of ``d``, ``+1e-7`` in the
normaliser. ``bfl`` (``UniEdit-Flow_FLUX``, on black-forest-labs' FLUX code, which their README
calls slightly better; the default on FLUX.1): ``n = round(alpha steps)`` (Python's, half to even),
``m`` from the mean of ``|d|`` over each 2x2 token's 64 channels, no ``1e-7`` (a ``d`` equal
everywhere, where theirs divides by zero, gives ``m = 0`` here). Both: the inversion with the empty
prompt at guidance 1, both branches of the edit at guidance ``w`` (CFG on SD3, where the demo runs
1: none; FLUX's distilled guidance, README: 1), the update summed in their order. One departure:
their diffusers ``image2latent`` encodes ``E(x) scale + shift`` where diffusers' pipelines (and the
decoder they use) have ``(E(x) - shift) scale``; the family's encoding is used here.

Defaults: ``alpha`` 0.6, ``omega`` 5, 15 steps (``demo_edit.py`` and ``scripts/edit.sh``, the same
for SD3, SDXL and the FLUX README). NFE at the defaults: ``n = 9``; inversion 10, edit 18 (x CFG).
"""

import math

import torch
import torch.nn.functional as F

from bench.diffusion.inversion.uniinv import UniInversionSpec
from bench.diffusion.sampling import decode_rows, encode_prompts, guided_eps, split_rows
from bench.errors import ConfigError
from bench.method import Conformance, Method, cfg_evaluations
from bench.params import Param
from bench.registry import register


VARIANTS = ("diffusers", "bfl")


def edited_steps(setting: dict) -> int:
    """``n``: the last steps of the schedule that the inversion and the edit run."""
    product = setting["alpha"] * setting["steps"]
    return math.floor(product) if setting["variant"] == "diffusers" else round(product)


def _min_max(x: torch.Tensor, eps: float) -> torch.Tensor:
    low = x.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
    high = x.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
    if eps:
        return (x - low) / (high - low + eps)
    span = high - low
    return torch.where(span > 0, (x - low) / torch.where(span > 0, span, 1), 0)


def fusion_mask(delta: torch.Tensor, variant: str = "diffusers") -> torch.Tensor:
    """(B, 1, h, w) in [0, 1], per row: ``diffusers``: the signed channel mean of ``delta``; ``bfl``: the
    mean of ``|delta|`` over each 2x2 token's channels, the same for its four pixels."""
    if variant == "diffusers":
        return _min_max(delta.mean(dim=1, keepdim=True), 1e-7)
    token = F.avg_pool2d(delta.abs().mean(dim=1, keepdim=True), 2)
    return _min_max(token, 0).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


@torch.no_grad()
def uniedit_latents(backbone, z: torch.Tensor, source_prompts, target_prompts, setting: dict) -> torch.Tensor:
    """Edit the latents ``z`` (at ``s_{steps-n}``, one row per prompt pair) down to ``s = 0``."""
    steps, omega = setting["steps"], setting["omega"]
    schedule = backbone.new_scheduler(steps, z.shape[-2:])
    sigmas, timesteps = schedule.sigmas, schedule.timesteps
    cond = torch.cat([encode_prompts(backbone, source_prompts), encode_prompts(backbone, target_prompts)])
    uncond = backbone.encode_text("")
    for i in range(steps - edited_steps(setting), steps):
        v_source, v_target = guided_eps(backbone, torch.cat([z, z]), timesteps[i], cond, uncond, setting["w"]).chunk(2)
        v_source, v_target = v_source.float(), v_target.float()
        delta = v_target - v_source
        mask = fusion_mask(delta, setting["variant"])
        h = sigmas[i + 1] - sigmas[i]
        fused = mask * v_target + (1 - mask) * v_source
        if setting["variant"] == "diffusers":
            z = (z.float() + omega * h * (1 + mask) * delta + h * fused).to(z.dtype)
        else:
            z = (z.float() + h * (fused + (mask + 1) * omega * delta)).to(z.dtype)
    return z


@register
class UniEditFlow(Method):
    name = "uniedit_flow"
    description = (
        "UniEdit-Flow: delayed inversion (empty prompt, predictor-corrector), then source/target velocity fusion "
        "by their normalised difference."
    )
    conformance = Conformance(settings=({"steps": 3, "alpha": 0.7}, {"steps": 4, "alpha": 1.0, "omega": 2.0, "w": 3.0}))
    needs = frozenset({"target_prompt"})
    families = ("sd3", "flux")
    stochastic = False
    params = (
        Param("steps", int, 15, "steps of the full schedule (UniEdit-Flow's demo_edit.py and FLUX README: 15)",
              low=1, high=1000),
        Param("alpha", float, 0.6, "fraction of the steps inverted and edited, the last floor (variant diffusers) or round (bfl) of alpha x steps "
              "(UniEdit-Flow's demo_edit.py and FLUX README: 0.6)", low=0, high=1),
        Param("omega", float, 5.0, "strength of the push along the target-source velocity difference "
              "(UniEdit-Flow's demo_edit.py and FLUX README: 5)", low=0, high=50),
        Param("w", float, 1.0, "guidance of both branches of the edit: CFG on SD3 (UniEdit-Flow's demo_edit.py: 1, "
              "no CFG), distilled guidance on FLUX (its FLUX README: 1)", low=0, high=50),
        Param("variant", str, "diffusers", "which of the authors' implementations to follow: diffusers "
              "(UniEdit-Flow_diffusers, SD3's default) or bfl (UniEdit-Flow_FLUX, FLUX's default); see the module",
              choices=VARIANTS, family_defaults=(("flux", "bfl"),)),
    )  # fmt: skip

    @classmethod
    def check(cls, setting):
        if edited_steps(setting) < 1:
            raise ConfigError(
                f"method {cls.name!r}: alpha = {setting['alpha']} of steps = {setting['steps']} edits no step; "
                "need alpha * steps >= 1"
            )

    @classmethod
    def schedule(cls, setting):
        n = edited_steps(setting)
        return setting["steps"] - n, n

    @classmethod
    def preparation(cls, setting):
        return UniInversionSpec(setting["steps"], edited_steps(setting))

    @classmethod
    def estimate_nfe(cls, setting):
        return edited_steps(setting) * 2 * cfg_evaluations(setting["w"]), cls.preparation_nfe(setting)

    def edit_batch(self, backbone, rows, setting):
        z = torch.cat([row.prep.z_T for row in rows])
        latents = uniedit_latents(
            backbone, z, [row.sample.source_prompt for row in rows], [row.sample.target_prompt for row in rows], setting
        )
        return split_rows(decode_rows(backbone, latents))
