"""``flow_inversion``: Euler ODE inversion of the source with its prompt on a rectified-flow
backbone (SD3), then regeneration from the inverted latent with the target prompt under CFG.

The flow counterpart of ``ddim_inversion`` (``bench.diffusion.inversion.flow``). With the source
prompt as target and ``w = inversion_w = 1`` it reconstructs the source up to the Euler
discretisation error, which shrinks as ``steps`` grows. Prepared once per sample and (steps,
inversion_w), and cached on disk.
"""

from bench.diffusion.inversion.ddim import regenerate_rows
from bench.diffusion.inversion.flow import FlowInversionSpec
from bench.method import Conformance, Method
from bench.params import Param, guidance_param
from bench.registry import register

STEPS = Param("steps", int, 50, "Euler steps of the full flow schedule", low=1, high=1000)
W = guidance_param()
INVERSION_W = Param("inversion_w", float, 1.0, "guidance weight of the flow inversion", low=0, high=50)


@register
class FlowInversion(Method):
    name = "flow_inversion"
    description = "Flow (Euler ODE) inversion with the source prompt, then regeneration with the target prompt under CFG."
    conformance = Conformance(settings=({"steps": 2, "w": 3.0}, {"steps": 3, "inversion_w": 2.0}))
    needs = frozenset({"target_prompt"})
    families = ("sd3", "flux")
    params = (STEPS, W, INVERSION_W)

    @classmethod
    def preparation(cls, setting):
        return FlowInversionSpec(setting["steps"], setting["inversion_w"])

    def edit_batch(self, backbone, rows, setting):
        return regenerate_rows(backbone, rows, setting["w"])
