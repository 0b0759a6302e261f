"""Long numerical studies (``pytest -m slow``): orders with many paths and levels, tighter tolerances."""

import pytest
import torch

from coupled_sde import TimeGrid
from coupled_sde.problems import GeometricBrownianMotion, TimeDependentOU
from coupled_sde.sde import FunctionSDE
from coupled_sde.studies import strong_convergence

F64 = torch.float64


@pytest.mark.slow
@pytest.mark.parametrize(
    "integrator, calculus, theory", [("euler", "ito", 0.5), ("milstein", "ito", 1.0), ("heun", "stratonovich", 1.0)]
)
def test_gbm_orders_with_8000_paths_and_six_levels(integrator, calculus, theory):
    gbm = GeometricBrownianMotion(mu=0.5, sigma=0.8, calculus=calculus)
    y0 = torch.ones(8000, 1, dtype=F64)
    res = strong_convergence(
        gbm, y0, TimeGrid.uniform(0, 1, 8), integrator, levels=6, reference=lambda g, inc: gbm.solution(y0, g, inc)[-1]
    )
    assert abs(res.order - theory) < 0.1, res.table()


@pytest.mark.slow
def test_sra1_order_1_5_with_4000_paths_and_five_levels():
    sde = FunctionSDE(lambda t, y: torch.sin(3 * y), lambda t, y: 1.0, noise_type="additive")
    y0 = torch.full((4000, 1), 0.5, dtype=F64)
    res = strong_convergence(sde, y0, TimeGrid.uniform(0, 1, 4), "sra1", levels=5, reference_refine=64)
    assert abs(res.order - 1.5) < 0.12, res.table()


@pytest.mark.slow
def test_heun_on_time_dependent_additive_noise_with_8000_paths():
    tou = TimeDependentOU(theta=1.0, sigma0=0.5, sigma1=1.5)
    y0 = torch.ones(8000, 1, dtype=F64)
    res = strong_convergence(
        tou, y0, TimeGrid.uniform(0, 1, 8), "heun", levels=6, reference=lambda g, inc: tou.solution(y0, g, inc)[-1]
    )
    assert abs(res.order - 1.0) < 0.1, res.table()
