"""``ddim_inversion``: DDIM-invert the source with its prompt, regenerate from ``z*_T`` with the target prompt.

With the source prompt as target and ``w = inversion_w = 1`` this is the DDIM reconstruction;
with ``w > 1`` the trajectory drifts and reconstruction degrades as ``w`` grows. The
inversion is prepared once per sample and (steps, inversion_w), and cached on disk.
"""


from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.inversion.ddim import DDIMInversionSpec, regenerate_rows
from bench.method import Conformance, Method
from bench.params import Param, guidance_param, steps_param
from bench.registry import register

STEPS = steps_param()
W = guidance_param()
INVERSION_W = Param("inversion_w", float, 1.0, "guidance weight of the DDIM inversion", low=0, high=50)


@register
class DDIMInversion(Method):
    name = "ddim_inversion"
    families = UNET_FAMILIES
    description = "DDIM inversion with the source prompt, then regeneration with the target prompt under CFG."
    stochastic = False
    conformance = Conformance(settings=({"steps": 2, "w": 3.0}, {"steps": 2, "inversion_w": 3.25}))
    needs = frozenset({"target_prompt"})
    params = (STEPS, W, INVERSION_W)

    @classmethod
    def preparation(cls, setting):
        return DDIMInversionSpec(setting["steps"], setting["inversion_w"])

    def edit_batch(self, backbone, rows, setting):
        return regenerate_rows(backbone, rows, setting["w"])
