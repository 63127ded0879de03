"""``rf_inversion``: RF-Inversion (Rout et al., ICLR 2025) on a rectified-flow backbone (SD3, FLUX.1): a
controlled inversion towards a noise sample (``gamma``), then a controlled reverse ODE with the
target prompt steered back towards the source (``eta``, between the ``start`` and ``stop``
fractions of the steps).

The ODEs, and where they follow the paper or the authors'/diffusers' code, are in
``bench.diffusion.inversion.rf``. Defaults: 28 steps, ``gamma`` 0.5, ``eta`` 0.9 from ``start`` 0
to ``stop`` 0.25 (7 of 28 steps) are diffusers' RF-Inversion example, written for FLUX (its
pipeline defaults ``eta`` to 1.0); guidance 3.5 is the pipeline's distilled guidance on FLUX (one
evaluation per step: 28 steps cost 28 + 28 = 56 NFE, FireFlow's Table 1) and the SD3 port's CFG weight on SD3. The inversion is computed once per sample and (steps, inversion_w, gamma,
noise_seed), and cached on disk. ``gamma = 0`` inverts exactly as ``flow_inversion`` at the same
``inversion_w``; ``eta = 0`` regenerates exactly as ``flow_inversion`` does from the same latent.
"""

from bench.diffusion.inversion.rf import INVERSION_TIMES, RFInversionSpec, rf_regenerate
from bench.diffusion.sampling import decode_rows, split_rows
from bench.errors import ConfigError
from bench.method import Conformance, Method
from bench.params import Param, whole_steps
from bench.registry import register

STEPS = Param("steps", int, 28, "Euler steps of inversion and editing (diffusers' FLUX example: 28)", low=1, high=1000)
W = Param(
    "w", float, 3.5, "guidance of the editing ODE: CFG weight on SD3 (the SD3 port's guidance_scale: 3.5), distilled "
    "guidance on FLUX (diffusers' pipeline_flux_rf_inversion guidance_scale: 3.5)", low=0, high=50,
)  # fmt: skip
INVERSION_W = Param(
    "inversion_w", float, 0.0, "guidance of the inversion (0: the empty prompt, as diffusers' FLUX pipeline "
    "(source_prompt '', source_guidance_scale 0) and the SD3 port)", low=0, high=50,
)  # fmt: skip
GAMMA = Param("gamma", float, 0.5, "inversion controller strength (diffusers, the SD3 port: 0.5)", low=0, high=1)
ETA = Param("eta", float, 0.9, "editing controller strength (diffusers' example: 0.9)", low=0, high=1)
START = Param("start", float, 0.0, "fraction of the steps where the editing controller starts (diffusers: 0)",
              low=0, high=1, step_fraction=True)  # fmt: skip
STOP = Param("stop", float, 0.25, "fraction of the steps where it stops (diffusers: 0.25)",
             low=0, high=1, step_fraction=True)  # fmt: skip
TIMES = Param(
    "times", str, "shifted", "the inversion's discretisation: 'shifted' (each step at its shifted sigma, the SD3 port "
    "Sarim-MBZUAI/rf-inversion-sd3) or 'diffusers' (unshifted time i/(N+1) with the shifted gaps, diffusers' "
    "examples/community/pipeline_flux_rf_inversion.py invert(); the default on FLUX)",
    choices=INVERSION_TIMES, family_defaults=(("flux", "diffusers"),),
)  # fmt: skip
NOISE_SEED = Param("noise_seed", int, 0, "seed of the noise y1, with the image hash (editbench's; diffusers: unseeded)",
                   low=0)  # fmt: skip


@register
class RFInversion(Method):
    name = "rf_inversion"
    description = "RF-Inversion: flow inversion steered to a noise sample, then sampling steered back to the source."
    conformance = Conformance(
        settings=({"steps": 3, "stop": 0.5}, {"steps": 4, "gamma": 0.45, "eta": 0.0, "start": 0.25})
    )
    needs = frozenset({"target_prompt"})
    families = ("sd3", "flux")
    params = (STEPS, W, INVERSION_W, GAMMA, ETA, START, STOP, NOISE_SEED, TIMES)

    @classmethod
    def check(cls, setting):
        if setting["start"] > setting["stop"]:
            raise ConfigError(
                f"method {cls.name!r}: start = {setting['start']} > stop = {setting['stop']}; need start <= stop"
            )

    @classmethod
    def preparation(cls, setting):
        return RFInversionSpec(
            setting["steps"], setting["inversion_w"], setting["gamma"], setting["noise_seed"], setting["times"]
        )

    def edit_batch(self, backbone, rows, setting):
        steps = setting["steps"]
        latents = rf_regenerate(
            backbone, [row.prep for row in rows], [row.sample.target_prompt for row in rows], setting["w"],
            setting["eta"], whole_steps(steps, setting["start"]), whole_steps(steps, setting["stop"]),
        )  # fmt: skip
        return split_rows(decode_rows(backbone, latents))
