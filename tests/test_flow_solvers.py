"""The flow ODE solvers (``bench.diffusion.inversion.flow_solvers``) on velocity fields whose exact
solutions are known, where the theory says each solver is exact, and their NFE.

Stub fields (no network): ``v(z, s) = A z + b(s)`` with ``A`` a scalar. The statements checked:
RF-Solver's step is exactly the second-order Taylor step ``z + h v + h^2/2 dv/ds`` of any affine
field (the half-step finite difference is exact for it), Euler's is the first-order one; for a
field that depends on ``s`` only and linearly, RF-Solver and FireFlow integrate exactly over any
sigmas, in both directions (so inversion then sampling returns the start), and Euler does not; on
a smooth nonlinear field, halving the step divides Euler's error by ~2 and the others' by ~4.
"""

import pytest
import torch

from bench.diffusion.inversion.flow_solvers import (
    FIRST,
    MID,
    SOLVERS,
    Evaluation,
    solve_inversion,
    solve_sampling,
)
from bench.diffusion.inversion.solver_inversion import SolverInversionSpec

SHIFTED = torch.tensor([1.0, 0.9375, 0.8571, 0.6923, 0.4286, 0.2, 0.0])  # a shifted flow schedule (shift 3)


def counting(field):
    """``field(z, s)`` as a solver velocity, recording every evaluation it is asked for."""
    calls = []

    def velocity(z, sigma, evaluation: Evaluation):
        calls.append(evaluation)
        return field(z.double(), sigma.double()).to(z.dtype)

    return velocity, calls


def affine(a: float, b0: float, b1: float):
    return lambda z, s: a * z + b0 + b1 * s


@pytest.mark.parametrize("a,b0,b1", [(0.7, 0.3, -1.2), (-2.0, 0.0, 0.5), (0.0, 1.0, 3.0)])
@pytest.mark.parametrize("h", [-0.3, 0.25])
def test_rf_solver_step_is_the_second_order_taylor_step_of_an_affine_field(a, b0, b1, h):
    z, s = (
        torch.randn(1, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
        torch.tensor(0.5, dtype=torch.float64),
    )
    v = a * z + b0 + b1 * s
    taylor = z + h * v + h**2 / 2 * (a * v + b1)  # dv/ds along the solution: A v + b'(s)
    velocity, _ = counting(affine(a, b0, b1))
    rf, _ = SOLVERS["rf_solver"].step(velocity, z, s, s + h, 0)
    euler, _ = SOLVERS["euler"].step(velocity, z, s, s + h, 0)
    assert torch.allclose(rf, taylor, atol=1e-6, rtol=0)
    assert torch.allclose(euler, z + h * v, atol=1e-6, rtol=0)
    if a != 0 or b1 != 0:
        assert (euler - taylor).abs().max() > 1e-3


@pytest.mark.parametrize("name,exact", [("rf_solver", True), ("fireflow", True), ("euler", False)])
def test_a_field_linear_in_s_alone_is_integrated_exactly_by_the_second_order_solvers(name, exact):
    b0, b1 = 0.4, -1.5
    z1 = torch.randn(1, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    velocity, _ = counting(affine(0.0, b0, b1))
    z0 = solve_sampling(SOLVERS[name], velocity, z1, SHIFTED)
    truth = z1 + b0 * (0 - 1) + b1 * (0 - 1) / 2  # integral of b0 + b1 s from s = 1 to 0
    back, _ = solve_inversion(SOLVERS[name], velocity, truth, SHIFTED)
    if exact:
        assert torch.allclose(z0, truth, atol=1e-6, rtol=0) and torch.allclose(back[-1:], z1, atol=1e-6, rtol=0)
    else:
        assert (z0 - truth).abs().max() > 1e-2 and (back[-1:] - z1).abs().max() > 1e-2


def _global_error(name: str, steps: int) -> float:
    field = lambda z, s: -torch.sin(z) + s**2
    velocity, _ = counting(field)
    z1 = torch.full((1, 1, 1, 1), 0.8, dtype=torch.float64)
    fine = solve_sampling(SOLVERS["rf_solver"], velocity, z1, torch.linspace(1, 0, 1025, dtype=torch.float64))
    return (
        (solve_sampling(SOLVERS[name], velocity, z1, torch.linspace(1, 0, steps + 1, dtype=torch.float64)) - fine)
        .abs()
        .item()
    )


@pytest.mark.parametrize("name,order", [("euler", 1), ("rf_solver", 2), ("fireflow", 2)])
def test_halving_the_step_divides_the_error_by_two_to_the_order(name, order):
    ratio = _global_error(name, 16) / _global_error(name, 32)
    assert 2**order * 0.8 < ratio < 2**order * 1.25


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_each_solver_evaluates_exactly_what_it_counts(steps):
    sigmas = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    z = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    for name, solver in SOLVERS.items():
        for run in (solve_sampling, solve_inversion):
            velocity, calls = counting(affine(0.5, 0.1, 0.2))
            run(solver, velocity, z, sigmas)
            assert len(calls) == solver.evaluations(steps), (name, run.__name__)
        assert SolverInversionSpec(name, steps, 3.0).nfe() == 2 * solver.evaluations(steps)
        assert SolverInversionSpec(name, steps, 1.0).nfe() == solver.evaluations(steps)
    # which evaluations: RF-Solver both stages of every step; FireFlow a fresh first evaluation only at its first step
    velocity, calls = counting(affine(0.5, 0.1, 0.2))
    solve_inversion(SOLVERS["fireflow"], velocity, z, sigmas)
    assert calls[0] == Evaluation(steps - 1, FIRST) and calls[1:] == [
        Evaluation(i, MID) for i in reversed(range(steps))
    ]
    velocity, calls = counting(affine(0.5, 0.1, 0.2))
    solve_sampling(SOLVERS["rf_solver"], velocity, z, sigmas)
    assert calls == [Evaluation(i, stage) for i in range(steps) for stage in (FIRST, MID)]


def test_fireflow_reuses_the_previous_midpoint_velocity():
    """The second step's half step starts from the first step's midpoint velocity, not a fresh one."""
    field = affine(1.0, 0.0, 0.0)
    velocity, _ = counting(field)
    z, sigmas = torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    solver = SOLVERS["fireflow"]
    z1, carried = solver.step(velocity, z, sigmas[0], sigmas[1], 0)
    assert torch.allclose(carried, field(z + (-0.25) * field(z, 1.0), 0.75))  # v at the first midpoint
    z2, _ = solver.step(velocity, z1, sigmas[1], sigmas[2], 1, carried)
    expected = z1 + (-0.5) * field(z1 + (-0.25) * carried, 0.25)
    assert torch.allclose(z2, expected) and torch.allclose(solve_sampling(solver, velocity, z, sigmas), z2)


def test_the_euler_solver_inverts_exactly_like_flow_invert():
    from bench.diffusion.backbone import Backbone, BackboneSpec
    from bench.diffusion.families.sd3 import guided_velocity
    from bench.diffusion.inversion.flow import flow_invert

    sd3 = Backbone(BackboneSpec(name="tiny-sd3", device="cpu"))
    z0 = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    cond, uncond = sd3.encode_text("a cat"), sd3.encode_text("")
    schedule = sd3.new_scheduler(3)
    velocity = lambda z, sigma, ev: guided_velocity(sd3, z, schedule.timestep_at(sigma), cond, uncond, 2.0)
    ours, _ = solve_inversion(SOLVERS["euler"], velocity, z0, schedule.sigmas)
    assert torch.equal(ours, flow_invert(sd3, z0, cond, uncond, 3, 2.0))
