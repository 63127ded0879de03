"""``rf_solver``: RF-Solver-Edit (Wang et al., "Taming Rectified Flow for Inversion and Editing", ICML 2025) on SD3 and FLUX.1.

Inversion and regeneration with RF-Solver's second-order Taylor step (2 NFE per step, times CFG;
``bench.diffusion.inversion.flow_solvers.RFSolver``), and RF-Solver-Edit's feature sharing: during the
first ``inject`` editing steps the target's image-token values in the last ``blocks`` transformer
blocks are the source's, recorded at the same step and evaluation of the inversion
(``bench.diffusion.attention.value_sharing``). ``inject = 0`` is plain second-order inversion and
regeneration.

Where this follows the paper and where the code: the step is the paper's Taylor expansion cut
at second order with the derivative from a half-step difference, which is what the code's
``denoise`` runs (they agree). The paper describes the sharing in general terms (self-attention
features of the inversion replace the editing's in the last blocks for the first steps); the
details are the code's (``FLUX_Image_Edit/src/flux/modules/layers.py``, followed here): ``V`` only,
both evaluations of a step shared, keyed by step and evaluation, for the first ``inject`` sampling
steps and recorded at the matching (last) inversion steps. The pairing is by step, not by noise
level: the inversion's first evaluation of a step is at its less noisy end, the edit's at its
noisier end (the half steps coincide). FLUX has single-stream blocks and SD3 has none (see
``value_sharing`` for what is shared in SD3's joint blocks).

Defaults: the authors give only FLUX settings. Their run scripts edit with 15 steps, ``inject`` 2
and ``--guidance 2`` (the parser's 25/20/5 are not what they run), invert at guidance 1, and share
in FLUX's single-stream blocks 20-37 (``info['id'] > 19``): on FLUX.1 the defaults are exactly
these (``blocks`` 18: the last 18 single-stream blocks). On SD3, the single-stream blocks are the
last 18 of FLUX's 57, about the last third of the network: the last 8 of SD3(.5)-medium's 24
blocks; FLUX's ``guidance`` is distilled guidance, not CFG, so ``w`` defaults to diffusers' SD3
pipeline's CFG, 7.0. NFE on FLUX at the defaults: 30 + 30 = 60, FireFlow's Table 4 count.
"""

from bench.method import Conformance
from bench.registry import register
from methods._flow_solver_editing import SolverEditor, solver_params


@register
class RFSolverEdit(SolverEditor):
    name = "rf_solver"
    description = (
        "RF-Solver-Edit: second-order (RF-Solver) inversion and regeneration, sharing the source's attention values."
    )
    stochastic = False
    conformance = Conformance(settings=({"steps": 2, "inject": 1, "w": 3.0}, {"steps": 3, "inject": 2, "blocks": 2}))
    solver = "rf_solver"
    params = solver_params(
        steps=(15, "RF-Solver-Edit's run scripts, FLUX"),
        w=(7.0, 2.0, "SD3: diffusers' default CFG; FLUX: RF-Solver-Edit's run scripts --guidance 2"),
        inject=(2, "RF-Solver-Edit's run scripts, FLUX"),
        blocks=(8, 18, "FLUX: RF-Solver-Edit's single-stream blocks 20-37, the last 18 of 57 blocks; SD3: ~1/3, "
                "8 of SD3-medium's 24"),
    )
