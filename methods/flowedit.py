"""``flowedit``: FlowEdit (Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli, ICCV 2025), inversion-free
editing on a rectified-flow backbone (SD3, FLUX.1: ``FlowEditSD3`` and ``FlowEditFLUX`` share the loop;
on FLUX the two branches' guidance is the distilled guidance input, one evaluation each).

Formulas: docs/REFERENCE.md, "Rectified-flow backbones (SD3 / SD3.5)". With ``T`` steps and sigmas
``s_i`` (``s_0 = 1``, ``s_T = 0``), the edit latent starts at the source latent ``z0`` and, for the
steps ``i = T - n_max .. T - n_min - 1``, moves by the difference of two velocities at coupled
noisy points: ``z_src = (1 - s_i) z0 + s_i n`` with fresh noise ``n``, ``z_tar = z_edit + z_src - z0``,
``dV = mean over n_avg draws of [v_tar_w(z_tar) - v_src_w(z_src)]``, ``z_edit += (s_{i+1} - s_i) dV``.
With ``n_min > 0`` the last ``n_min`` steps are ordinary Euler sampling under the target prompt
from ``z_tar`` (fresh noise at step ``T - n_min``), as SDEdit would run them.

Where this follows the paper (Algorithm 1, arXiv 2412.08629) and where the authors' code
(fallenshock/FlowEdit, ``FlowEdit_utils.FlowEditSD3``):

- defaults on FLUX.1 are the code's FLUX configuration (``FLUX_exp.yaml``: ``T_steps`` 28, ``n_max`` 24,
  source guidance 1.5, target 5.5); elsewhere (``SD3_exp.yaml``: ``T_steps`` 50, ``n_max`` 33,
  ``n_min`` 0, ``n_avg`` 1, source guidance 3.5, target guidance 13.5; its ``FlowEditSD3`` itself
  defaults ``n_max`` to 15, which the configuration overrides);
- the step order, the skipped first ``T - n_max`` steps and the ``n_min`` tail follow the code (the
  paper indexes the same steps from the clean end); its noise comes from the global torch RNG,
  here from each cell's own generator (one draw per row, per step and per average), so a cell's
  edit is the same in any batch;
- ``z_tar`` is computed as ``z_src + (z_edit - z0)``, the same sum as the paper's
  ``z_edit + z_src - z0`` in another order: while ``z_edit`` is still ``z0`` it is exactly ``z_src``
  in floating point, so with the target prompt and guidance equal to the source's both velocities
  are bitwise equal, ``dV = 0`` and the source latent comes back exactly (tested);
- the code evaluates the two branches in one transformer batch of four rows and, in the ``n_min``
  tail, four copies of the target latent of which only the target's two are used; here the source
  and target branches are two CFG calls with the same values, and the tail evaluates the target
  only, so NFE counts only what an edit needs: ``(n_max - n_min) n_avg (cfg(src_w) + cfg(tar_w))
  + n_min cfg(tar_w)``, ``cfg(w)`` 2 (1 at ``w`` 0 or 1).
"""

import torch

from bench.diffusion.families.sd3 import euler_step, velocity_fn
from bench.diffusion.sampling import decode_rows, denoise, fresh_noise, generators, source_latents, split_rows
from bench.errors import ConfigError
from bench.method import Conformance, Method, cfg_evaluations
from bench.params import Param
from bench.registry import register

# Defaults: FlowEdit's SD3_exp.yaml and, on FLUX.1, its FLUX_exp.yaml (= the FlowEditFLUX signature), fallenshock/FlowEdit @457f402.
STEPS = Param(
    "steps", int, 50, "Euler steps of the full schedule, T_steps (FlowEdit's SD3 config: 50, FLUX config: 28)",
    low=1, high=1000, family_defaults=(("flux", 28),),
)  # fmt: skip
N_MAX = Param(
    "n_max", int, 33, "steps edited, counted from the clean end (FlowEdit's SD3 config: 33, FLUX config: 24)",
    low=0, high=1000, family_defaults=(("flux", 24),),
)  # fmt: skip
N_MIN = Param("n_min", int, 0, "last steps run as plain sampling with the target prompt (FlowEdit's SD3 config: 0, FLUX config: 0)",
              low=0, high=1000)  # fmt: skip
N_AVG = Param("n_avg", int, 1, "noise draws averaged per edited step (FlowEdit's SD3 config: 1, FLUX config: 1)", low=1, high=100)
SRC_W = Param(
    "src_w", float, 3.5, "guidance of the source branch: CFG weight on SD3 (FlowEdit's SD3 config: 3.5), "
    "distilled guidance on FLUX (FLUX config: 1.5)", low=0, high=50, family_defaults=(("flux", 1.5),),
)  # fmt: skip
TAR_W = Param(
    "tar_w", float, 13.5, "guidance of the target branch: CFG weight on SD3 (FlowEdit's SD3 config: 13.5), "
    "distilled guidance on FLUX (FLUX config: 5.5)", low=0, high=50, family_defaults=(("flux", 5.5),),
)  # fmt: skip


@torch.no_grad()
def flowedit_latents(
    backbone, z0: torch.Tensor, source_prompts: list[str], target_prompts: list[str], setting: dict, generator
) -> torch.Tensor:
    """The edited latents (one row per source latent of ``z0``); ``generator``: one per row."""
    steps, n_max, n_min = setting["steps"], setting["n_max"], setting["n_min"]
    schedule = backbone.new_scheduler(steps, z0.shape[-2:])
    sigmas, timesteps = schedule.sigmas, schedule.timesteps
    source_velocity = velocity_fn(backbone, source_prompts, setting["src_w"])
    target_velocity = velocity_fn(backbone, target_prompts, setting["tar_w"])

    def coupled_source(i: int) -> torch.Tensor:
        noise = fresh_noise(z0, generator)
        return (1 - sigmas[i]) * z0 + sigmas[i] * noise

    z_edit = z0
    for i in range(steps - n_max, steps - n_min):
        delta = torch.zeros_like(z0, dtype=torch.float32)
        for _ in range(setting["n_avg"]):
            z_src = coupled_source(i)
            z_tar = z_src + (z_edit - z0)
            v_tar, v_src = target_velocity(z_tar, timesteps[i], i), source_velocity(z_src, timesteps[i], i)
            delta += (v_tar.float() - v_src.float()) / setting["n_avg"]
        z_edit = euler_step(z_edit, delta, sigmas[i], sigmas[i + 1])
    if n_min == 0:
        return z_edit
    first = steps - n_min
    z_tar = coupled_source(first) + (z_edit - z0)
    return denoise(schedule, z_tar, timesteps[first:], target_velocity)


@register
class FlowEdit(Method):
    name = "flowedit"
    description = (
        "FlowEdit: inversion-free ODE from the source to the target by velocity differences at coupled noisy points."
    )
    stochastic = True
    conformance = Conformance(
        settings=({"steps": 3, "n_max": 2}, {"steps": 4, "n_max": 3, "n_min": 1, "n_avg": 2})
    )
    needs = frozenset({"target_prompt"})
    families = ("sd3", "flux")
    params = (STEPS, N_MAX, N_MIN, N_AVG, SRC_W, TAR_W)

    @classmethod
    def check(cls, setting):
        if not setting["n_min"] <= setting["n_max"] <= setting["steps"]:
            raise ConfigError(
                f"method {cls.name!r}: n_min = {setting['n_min']}, n_max = {setting['n_max']}, steps = {setting['steps']}; "
                "need n_min <= n_max <= steps"
            )

    @classmethod
    def schedule(cls, setting):
        return setting["steps"] - setting["n_max"], setting["n_max"]

    @classmethod
    def estimate_nfe(cls, setting):
        edited = (setting["n_max"] - setting["n_min"]) * setting["n_avg"]
        branches = cfg_evaluations(setting["src_w"]) + cfg_evaluations(setting["tar_w"])
        return edited * branches + setting["n_min"] * cfg_evaluations(setting["tar_w"]), 0

    def edit_batch(self, backbone, rows, setting):
        z0 = source_latents(backbone, rows)
        latents = flowedit_latents(
            backbone, z0, [row.sample.source_prompt for row in rows], [row.sample.target_prompt for row in rows],
            setting, generators(rows),
        )  # fmt: skip
        return split_rows(decode_rows(backbone, latents))
