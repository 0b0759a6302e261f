"""RF-Solver and FireFlow as integrators of ODEs: orders on a linear ODE with an exact solution, and
parity with each paper's published update rule (transcribed below from the authors' sampling loops)."""

import math

import pytest
import torch

from coupled_sde import TimeGrid, solve
from coupled_sde.integrators import FireFlow, RFSolver, resolve_integrator
from coupled_sde.problems import OrnsteinUhlenbeck
from coupled_sde.sde import ODE

# dy/dt = -y + sin(3 t): linear, time-dependent; y(t) = c e^{-t} + (sin 3t - 3 cos 3t) / 10
_Y0 = 0.7


def _exact(t: float) -> float:
    c = _Y0 + 0.3
    return c * math.exp(-t) + (math.sin(3 * t) - 3 * math.cos(3 * t)) / 10


def _field(t, y):
    return -y + math.sin(3 * t)


def _order(integrator, ns=(64, 128, 256, 512)):
    y0 = torch.full((1, 1), _Y0, dtype=torch.float64)
    errs = [abs(float(solve(ODE(_field), y0, TimeGrid.uniform(0.0, 2.0, n), integrator).y) - _exact(2.0)) for n in ns]
    slope = math.log(errs[0] / errs[-1]) / math.log(ns[-1] / ns[0])
    return slope, errs


@pytest.mark.parametrize("name", ["rf-solver", "fireflow"])
def test_order_two_on_a_linear_ode(name):
    slope, errs = _order(name)
    assert abs(slope - resolve_integrator(name).info.ode_order) < 0.1, (slope, errs)  # the declared order, measured
    euler_slope, euler_errs = _order("euler")
    assert 0.9 < euler_slope < 1.1 and errs[-1] < euler_errs[-1] / 50


# --- transcriptions of the published loops (RF-Solver-Edit / FireFlow ``sampling.py``), with the
# model replaced by a velocity function ``model(x, t)`` and the timesteps given as a list --------


def _reference_rf_solver(model, x, timesteps):
    for t_curr, t_prev in zip(timesteps[:-1], timesteps[1:]):
        pred = model(x, t_curr)
        img_mid = x + (t_prev - t_curr) / 2 * pred
        pred_mid = model(img_mid, t_curr + (t_prev - t_curr) / 2)
        first_order = (pred_mid - pred) / ((t_prev - t_curr) / 2)
        x = x + (t_prev - t_curr) * pred + 0.5 * (t_prev - t_curr) ** 2 * first_order
    return x


def _reference_fireflow(model, x, timesteps):
    next_step_velocity = None
    for t_curr, t_prev in zip(timesteps[:-1], timesteps[1:]):
        pred = model(x, t_curr) if next_step_velocity is None else next_step_velocity
        img_mid = x + (t_prev - t_curr) / 2 * pred
        pred_mid = model(img_mid, t_curr + (t_prev - t_curr) / 2)
        next_step_velocity = pred_mid
        x = x + (t_prev - t_curr) * pred_mid
    return x


@pytest.mark.parametrize("name, reference", [("rf-solver", _reference_rf_solver), ("fireflow", _reference_fireflow)])
@pytest.mark.parametrize("decreasing", [False, True])
def test_parity_with_the_published_update(name, reference, decreasing):
    torch.manual_seed(0)
    a = torch.randn(3, 3, dtype=torch.float64) * 0.5

    def velocity(x, t):  # a nonlinear, time-dependent field on (B, 3)
        return torch.tanh(x @ a.T) * (1 + t) - 0.3 * x * math.cos(t)

    times = [0.0, 0.1, 0.25, 0.45, 0.7, 1.0]
    if decreasing:
        times = times[::-1]
    x0 = torch.randn(4, 3, dtype=torch.float64)
    calls = []

    def counted(t, y):
        calls.append(t)
        return velocity(y, t)

    ours = solve(ODE(counted), x0, TimeGrid(times), name)
    ref = reference(velocity, x0, times)
    assert (ours.y - ref).abs().max() < 1e-14
    n = len(times) - 1
    assert ours.n_drift_evals == (2 * n if name == "rf-solver" else n + 1)


def test_fireflow_state_does_not_leak_between_solves():
    """One FireFlow object serves several solves: each one starts with a fresh velocity."""
    integ = FireFlow()
    ode = ODE(lambda t, y: -y * (1 + t))
    grid = TimeGrid.uniform(0.0, 1.0, 5)
    y0 = torch.ones(2, 1, dtype=torch.float64)
    first = solve(ode, y0, grid, integ)
    second = solve(ode, 2 * y0, grid, integ)
    fresh = solve(ode, 2 * y0, grid, FireFlow())
    assert torch.equal(second.y, fresh.y) and second.n_drift_evals == 6
    assert not torch.equal(first.y, second.y)
    # a callback that replaces the state invalidates the carried velocity (it is evaluated afresh)
    replaced = solve(ode, y0, grid, FireFlow(), callback=lambda i, t, y: y.clone())
    assert replaced.n_drift_evals == 2 * 5


def test_sdes_are_refused_and_names_resolve():
    assert isinstance(resolve_integrator("rf-solver"), RFSolver) and isinstance(resolve_integrator("FireFlow"), FireFlow)
    ou = OrnsteinUhlenbeck()
    for name in ("rf-solver", "fireflow"):
        with pytest.raises(ValueError, match="integrates ODEs"):
            solve(ou, torch.zeros(2, 1), TimeGrid.uniform(0, 1, 4), name, noise=0)
