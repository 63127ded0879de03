"""What a backbone family changes in a method's bookkeeping, known before any cell runs: how many
denoiser evaluations one guided step of one latent costs, and how many steps a start level
``t0`` runs.

The defaults are Stable Diffusion's: classifier-free guidance costs 2 evaluations (1 at ``w`` 0
or 1) and ``t0`` runs ``int(steps * t0)`` steps (``StableDiffusionImg2ImgPipeline``). A family
that differs (FLUX.1: the distilled guidance is an input of the transformer, one evaluation; its
img2img keeps ``steps - int(steps - steps * t0)``) gives its own ``StepRules``; the dry run, the
worker and the conformance battery estimate under the backbone's rules (``rules_in_force``).
Methods read them through ``bench.method.cfg_evaluations`` and ``Method.schedule``.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from bench.params import whole_steps


def cfg_step_evaluations(w: float) -> int:
    """Classifier-free guidance: the conditional and unconditional predictions, one of them at ``w`` 1 or 0."""
    return 1 if w in (0, 1) else 2


@dataclass(frozen=True)
class StepRules:
    """``guided_evaluations(w)``: evaluations of one guided step of one latent; ``start_steps(steps, t0)``:
    the steps a start level ``t0`` runs, counted from the clean end."""

    guided_evaluations: Callable[[float], int] = cfg_step_evaluations
    start_steps: Callable[[int, float], int] = whole_steps


_CURRENT: ContextVar[StepRules] = ContextVar("step_rules", default=StepRules())


def current_rules() -> StepRules:
    return _CURRENT.get()


@contextmanager
def rules_in_force(rules: StepRules) -> Iterator[None]:
    """Estimate and record under ``rules`` (a backbone's: ``Backbone.step_rules``) inside the block."""
    token = _CURRENT.set(rules)
    try:
        yield
    finally:
        _CURRENT.reset(token)
