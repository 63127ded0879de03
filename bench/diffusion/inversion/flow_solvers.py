"""Higher-order ODE solvers of rectified flow (SD3), for inversion (``s``: 0 -> 1) and sampling (1 -> 0).

Formulas: docs/REFERENCE.md, "Flow solvers and value sharing (SD3)".

Every solver takes one step ``s -> s_next`` (``h = s_next - s``; negative when sampling, positive
when inverting: the same formula runs both ways) with a velocity callable
``velocity(z, sigma, evaluation)``; ``evaluation`` names which evaluation of which step it is
(``Evaluation``), so that value sharing (``bench.diffusion.attention.value_sharing``) can pair an
inversion evaluation with the editing evaluation of the same step. Steps are indexed in sampling
order (0 = the noisiest step), so inversion runs its indices from ``steps - 1`` down to 0.

- ``euler``: ``z + h v(z, s)``; 1 NFE per step (``bench.diffusion.families.sd3.euler_step``).
- ``rf_solver`` (Wang et al., "Taming Rectified Flow for Inversion and Editing", ICML 2025): the
  second-order Taylor step ``z + h v + h^2/2 v'`` with ``v' = (v(z_m, s + h/2) - v) / (h/2)``,
  ``z_m = z + h/2 v``; 2 NFE per step. Paper and authors' code (``denoise`` in
  ``FLUX_Image_Edit/src/flux/sampling.py``) agree; followed as written. The half step is evaluated
  at ``s + h/2`` of the (shifted) sigmas, timestep ``1000 (s + h/2)``, both ways. Algebraically the
  step is the explicit midpoint step ``z + h v(z_m, s + h/2)``; it is computed in the Taylor form
  (fp32) as the authors do, so rounding follows theirs.
- ``uniinv`` (UniEdit-Flow's inversion, Jiao et al., 2025): ``z_p = z + h v_prev``,
  ``v_n = v(z_p, s + h)``, ``z_next = z + h v_n``, ``v_prev = v_n``; the first step evaluates
  ``v_prev = v(z, s)`` fresh. ``steps + 1`` NFE per solve. As the authors' codes (``denoise_uniinv``
  of ``UniEdit-Flow_FLUX/src/flux/sampling.py`` and ``UniInvEulerScheduler``, which agree): the
  velocity of the predicted end point corrects the step and is carried into the next.
- ``fireflow`` (Deng et al., "FireFlow", ICML 2025): ``z_m = z + h/2 v_prev``,
  ``v_m = v(z_m, s + h/2)``, ``z_next = z + h v_m``, ``v_prev = v_m``; the first step of a solve
  evaluates ``v_prev = v(z, s)`` fresh. ``steps + 1`` NFE per solve. As the authors' code
  (``denoise_fireflow`` in ``src/flux/sampling.py``): the carried velocity is reset at the start of
  every solve, so nothing carries from inversion into editing (sampling's first step evaluates
  fresh at ``s = 1``), and the reused velocity is the previous midpoint's, taken as the velocity at
  the current point.

Neither solver treats the last step specially: the step into ``s = 0`` (and, inverting, the one
out of it) is the same formula, its half step at ``s_last / 2``, as in both authors' codes.
Inversion evaluates at the current, less noisy point first, as ``bench.diffusion.inversion.flow``
(and both authors' codes, which run the same step with the sigmas reversed). A solver inversion is
cached on disk like the others (``solver_inversion.SolverInversionSpec``: its kind is the solver's name, so the
key names the solver); FireFlow's entry also keeps the velocity carried into each step, so that
any step can be replayed from the cache alone (``replay_steps``).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.diffusion.families.sd3 import euler_step

FIRST, MID = "first", "mid"


@dataclass(frozen=True)
class Evaluation:
    """One velocity evaluation of a solve: step ``index`` in sampling order (0 = noisiest), ``stage`` FIRST or MID."""

    index: int
    stage: str


Velocity = Callable[[torch.Tensor, torch.Tensor, Evaluation], torch.Tensor]


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32, or wider when it already is (half-precision latents are stepped in fp32, as diffusers does)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _add(latent: torch.Tensor, scale, velocity: torch.Tensor) -> torch.Tensor:
    """``latent + scale * velocity`` in at least fp32."""
    return _wide(latent) + scale * _wide(velocity)


class Euler:
    name = "euler"

    @staticmethod
    def evaluations(steps: int) -> int:
        return steps

    @staticmethod
    def step(velocity: Velocity, latent, sigma, sigma_next, index: int, carried=None):
        v = velocity(latent, sigma, Evaluation(index, FIRST))
        return euler_step(latent, v, sigma, sigma_next), None


class RFSolver:
    name = "rf_solver"

    @staticmethod
    def evaluations(steps: int) -> int:
        return 2 * steps

    @staticmethod
    def step(velocity: Velocity, latent, sigma, sigma_next, index: int, carried=None):
        h = sigma_next - sigma
        v = velocity(latent, sigma, Evaluation(index, FIRST))
        v_mid = velocity(_add(latent, h / 2, v).to(latent.dtype), sigma + h / 2, Evaluation(index, MID))
        derivative = (_wide(v_mid) - _wide(v)) / (h / 2)
        return (_add(latent, h, v) + 0.5 * h**2 * derivative).to(latent.dtype), None


class FireFlow:
    name = "fireflow"

    @staticmethod
    def evaluations(steps: int) -> int:
        return steps + 1

    @staticmethod
    def step(velocity: Velocity, latent, sigma, sigma_next, index: int, carried=None):
        h = sigma_next - sigma
        v = velocity(latent, sigma, Evaluation(index, FIRST)) if carried is None else carried
        v_mid = velocity(_add(latent, h / 2, v).to(latent.dtype), sigma + h / 2, Evaluation(index, MID))
        return _add(latent, h, v_mid).to(latent.dtype), v_mid


class UniInv:
    name = "uniinv"

    @staticmethod
    def evaluations(steps: int) -> int:
        return steps + 1

    @staticmethod
    def step(velocity: Velocity, latent, sigma, sigma_next, index: int, carried=None):
        h = sigma_next - sigma
        v = velocity(latent, sigma, Evaluation(index, FIRST)) if carried is None else carried
        v_next = velocity(_add(latent, h, v).to(latent.dtype), sigma_next, Evaluation(index, MID))
        return _add(latent, h, v_next).to(latent.dtype), v_next


SOLVERS = {s.name: s for s in (Euler, RFSolver, FireFlow, UniInv)}
#: Solvers whose step reuses a velocity from the step before (it is kept in the cache entry).
CARRIES = ("fireflow", "uniinv")


@torch.no_grad()
def solve_inversion(solver, velocity: Velocity, z0: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, list]:
    """(trajectory (steps + 1, C, h, w): ``[0]`` is ``z0``, ``[k]`` after k inversion steps; the velocity
    carried into each inversion step, None where the step evaluates fresh)."""
    steps = len(sigmas) - 1
    latents, carried, carried_in = [z0], None, []
    for index in reversed(range(steps)):
        carried_in.append(carried)
        latent, carried = solver.step(velocity, latents[-1], sigmas[index + 1], sigmas[index], index, carried)
        latents.append(latent)
    return torch.cat(latents), carried_in


@torch.no_grad()
def solve_sampling(solver, velocity: Velocity, latent: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Solve from ``sigmas[0]`` (noise) down to ``sigmas[-1]``; the final latent."""
    carried = None
    for index in range(len(sigmas) - 1):
        latent, carried = solver.step(velocity, latent, sigmas[index], sigmas[index + 1], index, carried)
    return latent


@torch.no_grad()
def replay_steps(
    solver, velocity: Velocity, latents: torch.Tensor, carried_in: list, sigmas: torch.Tensor, indices
) -> None:
    """Run again the inversion steps of sampling ``indices`` from a stored trajectory, exactly as the
    inversion ran them (same inputs, so the same evaluations); their results are discarded."""
    steps = len(sigmas) - 1
    for index in indices:
        k = steps - 1 - index  # the inversion step of sampling step ``index``
        solver.step(velocity, latents[k][None], sigmas[index + 1], sigmas[index], index, carried_in[k])


def stack_carried(carried_in: list) -> torch.Tensor:
    """The carried velocities of inversion steps 1.. as one tensor (step 0 evaluates fresh)."""
    return torch.cat(carried_in[1:]) if len(carried_in) > 1 else torch.zeros(0)


def unstack_carried(stored: torch.Tensor, steps: int) -> list:
    return [None] + [stored[k][None] for k in range(steps - 1)]
