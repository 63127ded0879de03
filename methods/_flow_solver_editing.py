"""The base of the solver-based flow editors ``rf_solver`` and ``fireflow``: invert the source with a
higher-order solver, regenerate with the target prompt and the same solver, the first ``inject``
steps taking the source's values in the last ``blocks`` transformer blocks (SD3: joint blocks, image
tokens; FLUX.1: single-stream blocks, text and image tokens, as the authors).

Machinery: ``bench.diffusion.inversion.flow_solvers`` (the steps), ``...inversion.solver_inversion``
(cached inversion, value recording, batched regeneration) and ``bench.diffusion.attention.value_sharing``
(the processor). A subclass names its solver and its parameters' defaults (``solver_params``).

NFE: the solver's evaluations times CFG, for the inversion (``inversion_w``) and for the edit
(``w``); ``estimate_nfe`` is exact. On FLUX.1 ``w`` and ``inversion_w`` are the distilled guidance
input (one evaluation per solver evaluation), as the authors run them. On a disk-cache hit the preparation still spends ``inject`` x the
solver's evaluations per step x CFG(``inversion_w``) recording the values (``solver_inversion``).
"""

from bench.diffusion.attention.value_sharing import shared_blocks
from bench.diffusion.inversion.flow_solvers import SOLVERS
from bench.diffusion.inversion.solver_inversion import SolverInversionSpec, regenerate_shared
from bench.diffusion.sampling import decode_rows, split_rows
from bench.errors import ConfigError
from bench.method import Method, cfg_evaluations
from bench.params import Param


def solver_params(steps: tuple, w: tuple, inject: tuple, blocks: tuple) -> tuple[Param, ...]:
    """The parameters, each given as (default, where the default comes from); ``w`` and ``blocks`` as
    (SD3 default, FLUX default, where they come from)."""
    return (
        Param("steps", int, steps[0], f"solver steps of the inversion and of the edit ({steps[1]})", low=1, high=1000),
        Param("w", float, w[0], f"guidance of the edit: CFG weight on SD3, distilled guidance on FLUX ({w[2]})",
              low=0, high=50, family_defaults=(("flux", w[1]),)),
        Param("inversion_w", float, 1.0, "guidance of the inversion (the authors invert with guidance 1, the source "
              "prompt alone)", low=0, high=50),
        Param("inject", int, inject[0], f"first editing steps that take the source's values; 0 = no sharing ({inject[1]})",
              low=0, high=1000),
        Param("blocks", int, blocks[0], "share values in the last N blocks, all when fewer: SD3's joint blocks, "
              f"FLUX's single-stream blocks ({blocks[2]})", low=1, high=1000, family_defaults=(("flux", blocks[1]),)),
    )  # fmt: skip


class SolverEditor(Method):
    """Inversion + regeneration with ``solver`` (a ``flow_solvers.SOLVERS`` name) and value sharing."""

    solver: str
    needs = frozenset({"target_prompt"})
    families = ("sd3", "flux")

    @classmethod
    def check(cls, setting):
        if setting["inject"] > setting["steps"]:
            raise ConfigError(
                f"method {cls.name!r}: inject = {setting['inject']} is more than steps = {setting['steps']}; "
                "need inject <= steps"
            )

    @classmethod
    def preparation(cls, setting):
        steps, inversion_w, blocks, inject = (setting[k] for k in ("steps", "inversion_w", "blocks", "inject"))
        return SolverInversionSpec(cls.solver, steps, inversion_w, blocks, inject)

    @classmethod
    def estimate_nfe(cls, setting):
        edit = SOLVERS[cls.solver].evaluations(setting["steps"]) * cfg_evaluations(setting["w"])
        return edit, cls.preparation_nfe(setting)

    def edit_batch(self, backbone, rows, setting):
        blocks = shared_blocks(backbone.transformer, setting["blocks"])
        latents = regenerate_shared(
            backbone, [row.prep for row in rows], [row.sample.target_prompt for row in rows], setting["w"], blocks,
            setting["inject"],
        )  # fmt: skip
        return split_rows(decode_rows(backbone, latents))
