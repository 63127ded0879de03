"""``null_text_inversion``: null-text inversion (Mokady et al., CVPR 2023), then regeneration
from ``z*_T`` with the target prompt and the optimised null embedding of each step.

With the source prompt as target and ``w = nti_w`` it reconstructs the source. The
optimisation's forward and backward passes are the preparation's NFE and gradient
evaluations (``prep_nfe``, ``prep_grad_evals``), recorded on the first cell that uses a
freshly computed inversion (0 when it came from the disk cache).
"""


from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.inversion.ddim import NullTextInversionSpec, NullTextParams, regenerate_rows
from bench.errors import ConfigError
from bench.method import Conformance, Method
from bench.params import Param
from bench.registry import register
from methods.ddim_inversion import INVERSION_W, STEPS, W

NULL_TEXT_PARAMS = (
    Param("nti_w", float, 7.5, "guidance weight the null embeddings are optimised for", low=0, high=50),
    Param("inner_steps", int, 10, "Adam iterations per step at most", low=1, high=1000),
    Param("lr", float, 1e-2, "Adam learning rate at the first step", low=0, low_open=True),
    Param("lr_decay", float, 0.01, "learning rate at step i: lr * (1 - lr_decay * i)", low=0),
    Param("early_stop", float, 1e-5, "a step stops once its loss < early_stop + early_stop_slope * i", low=0),
    Param("early_stop_slope", float, 2e-5, "growth per step of the early-stop threshold", low=0),
)
#: One Adam step a timestep that never stops early, so null-text costs exactly its NFE estimate
#: (the conformance cases of the methods over null-text inversion).
EXACT_NULL_TEXT = {"inner_steps": 1, "early_stop": 0.0, "early_stop_slope": 0.0}


def null_text_params(setting: dict) -> NullTextParams:
    """The ``NullTextParams`` of a resolved setting holding the ``NULL_TEXT_PARAMS``."""
    return NullTextParams(
        w=setting["nti_w"], inner_steps=setting["inner_steps"], lr=setting["lr"], lr_decay=setting["lr_decay"],
        early_stop=setting["early_stop"], early_stop_slope=setting["early_stop_slope"],
    )  # fmt: skip


def check_null_text(method: str, setting: dict) -> None:
    """Reject a learning-rate schedule that reaches zero or below within the run's steps."""
    if null_text_params(setting).lr_at(setting["steps"] - 1) <= 0:
        raise ConfigError(
            f"method {method!r}: lr_decay = {setting['lr_decay']} with steps = {setting['steps']} makes the "
            "learning rate of the last step <= 0; need lr_decay * (steps - 1) < 1"
        )


@register
class NullTextInversion(Method):
    name = "null_text_inversion"
    families = UNET_FAMILIES
    description = "Null-text inversion (per-step optimised null embeddings), then regeneration with the target prompt."
    stochastic = False
    conformance = Conformance(
        settings=({"steps": 2, **EXACT_NULL_TEXT}, {"steps": 2, **EXACT_NULL_TEXT, "inner_steps": 2, "nti_w": 3.0})
    )
    needs = frozenset({"target_prompt"})
    params = (STEPS, W, INVERSION_W, *NULL_TEXT_PARAMS)

    @classmethod
    def check(cls, setting):
        check_null_text(cls.name, setting)

    @classmethod
    def preparation(cls, setting):
        return NullTextInversionSpec(setting["steps"], setting["inversion_w"], null_text_params(setting))

    def edit_batch(self, backbone, rows, setting):
        return regenerate_rows(backbone, rows, setting["w"])
