"""``fireflow``: FireFlow (Deng et al., "FireFlow: Fast Inversion of Rectified Flow for Image Semantic Editing", ICML 2025) on SD3 and FLUX.1.

Inversion and regeneration with FireFlow's midpoint step that reuses the previous step's midpoint
velocity (``steps + 1`` NFE per solve, times CFG; ``bench.diffusion.inversion.flow_solvers.FireFlow``),
with the same value sharing as ``rf_solver`` (the machinery is ``methods._flow_solver_editing``).

Where this follows the paper and where the code: the step is the paper's and the code's
``denoise_fireflow`` (they agree; the code also resets the carried velocity at the start of the
edit, which the paper leaves implicit). Sharing follows the code: only evaluations the inversion
actually ran are shared, so in practice the midpoint evaluations (the first one of each step is
reused and never recorded). Defaults from the authors' README (FLUX): 8 steps, ``inject`` 1, ``--guidance 2``, inversion at
guidance 1, and value sharing in every single-stream block (``--start_layer_index 0
--end_layer_index 37``): on FLUX.1 exactly these (``blocks`` 38). On SD3: the last 38 of FLUX's 57
blocks are about two thirds, 16 of SD3(.5)-medium's 24, and ``w`` is diffusers' SD3 CFG default
(FLUX's ``guidance`` is distilled guidance, not CFG). The parser's own defaults (25 steps, inject
20, blocks 20-37, guidance 5) are RF-Solver's and not what they run. NFE on FLUX at the defaults:
9 + 9 = 18, FireFlow's Table 4 count.
"""

from bench.method import Conformance
from bench.registry import register
from methods._flow_solver_editing import SolverEditor, solver_params


@register
class FireFlowEdit(SolverEditor):
    name = "fireflow"
    description = "FireFlow: midpoint inversion and regeneration reusing each step's midpoint velocity (~1 NFE/step), sharing values."
    stochastic = False
    conformance = Conformance(settings=({"steps": 2, "inject": 1, "w": 3.0}, {"steps": 3, "inject": 2, "blocks": 2}))
    solver = "fireflow"
    params = solver_params(
        steps=(8, "FireFlow's README, FLUX"),
        w=(7.0, 2.0, "SD3: diffusers' default CFG; FLUX: FireFlow's README --guidance 2"),
        inject=(1, "FireFlow's README, FLUX"),
        blocks=(16, 38, "FLUX: FireFlow's README, single-stream blocks 0-37, the last 38 of 57 blocks; SD3: ~2/3, 16 "
                "of SD3-medium's 24"),
    )
