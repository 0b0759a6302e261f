"""Strong and weak orders against closed forms, on shared Brownian paths."""

import math

import pytest
import torch

from coupled_sde import EulerMaruyama, Heun, Milstein, TimeGrid, solve
from coupled_sde.problems import GeometricBrownianMotion, OrnsteinUhlenbeck
from coupled_sde.sde import ODE
from coupled_sde.studies import strong_convergence, weak_convergence

Y0 = torch.ones(2000, 1, dtype=torch.float64)
COARSE = TimeGrid.uniform(0.0, 1.0, 8)


@pytest.mark.parametrize(
    "integrator, calculus, theory",
    [("euler", "ito", 0.5), ("milstein", "ito", 1.0), ("heun", "stratonovich", 1.0)],
)
def test_strong_order_on_gbm(integrator, calculus, theory):
    gbm = GeometricBrownianMotion(mu=0.5, sigma=0.8, calculus=calculus)
    res = strong_convergence(gbm, Y0, COARSE, integrator, reference=lambda g, inc: gbm.solution(Y0, g, inc)[-1])
    assert abs(res.order - theory) < 0.15, res.table()


@pytest.mark.parametrize("integrator", ["euler", "heun"])
def test_strong_order_on_ou_additive_noise(integrator):
    ou = OrnsteinUhlenbeck(theta=2.0, mu=0.5, sigma=0.7)
    res = strong_convergence(ou, Y0, COARSE, integrator, reference=lambda g, inc: ou.solution(Y0, g, inc)[-1])
    assert abs(res.order - EulerMaruyama.info.strong_order_additive) < 0.15, res.table()


def test_weak_order_euler_on_gbm():
    gbm = GeometricBrownianMotion(mu=1.5, sigma=0.3)
    y0 = torch.ones(20000, 1, dtype=torch.float64)
    res = weak_convergence(gbm, y0, TimeGrid.uniform(0, 1, 4), lambda y: y[:, 0], math.exp(1.5), "euler")
    assert abs(res.order - 1.0) < 0.15, res.table()


def test_ode_counterparts_orders():
    ode = ODE(lambda t, y: -2.0 * y)
    y0 = torch.ones(1, 1, dtype=torch.float64)
    errs = {}
    for name in ("euler", "heun"):
        errs[name] = [abs(float(solve(ode, y0, TimeGrid.uniform(0, 1, n), name).y) - math.exp(-2)) for n in (16, 32, 64)]
    assert 0.9 < math.log2(errs["euler"][0] / errs["euler"][2]) / 2 < 1.1
    assert 1.9 < math.log2(errs["heun"][0] / errs["heun"][2]) / 2 < 2.1


def test_declared_properties():
    assert EulerMaruyama.info.strong_order == 0.5 and EulerMaruyama.info.weak_order == 1.0
    assert Heun.info.calculus.value == "stratonovich" and Heun.info.drift_evals_per_step == 2
    assert Milstein.info.strong_order == 1.0


def test_calculus_mismatch_is_rejected():
    with pytest.raises(ValueError, match="stratonovich"):
        solve(GeometricBrownianMotion(calculus="ito"), Y0[:4], COARSE, "heun", noise=0)
    with pytest.raises(ValueError, match="ito"):
        solve(GeometricBrownianMotion(calculus="stratonovich"), Y0[:4], COARSE, "euler", noise=0)
    # additive noise: both calculi agree, both methods accepted
    solve(OrnsteinUhlenbeck(), Y0[:4], COARSE, "heun", noise=0)


def test_euler_maruyama_is_the_textbook_update():
    ou = OrnsteinUhlenbeck(theta=1.3, mu=0.2, sigma=0.5)
    grid = TimeGrid.uniform(0, 1, 20)
    from coupled_sde import GridBrownian

    src = GridBrownian(grid, 5, (3,), seed=2, dtype=torch.float64)
    dw = src.on_grid(grid)[0]
    x = torch.zeros(5, 3, dtype=torch.float64)
    for i, (_, dt) in enumerate(grid.steps()):
        x = x + 1.3 * (0.2 - x) * dt + 0.5 * dw[:, i]
    assert torch.allclose(solve(ou, torch.zeros(5, 3, dtype=torch.float64), grid, "euler", noise=src).y, x, atol=1e-14)
