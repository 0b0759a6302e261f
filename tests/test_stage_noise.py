"""The one stage primitive (StepNoise.prod/g_dw + land): Heun's corrector, the pinned-path driver's
exactness for every integrator, and the one implied-increment mechanism (issue 7 item 5)."""

import math

import pytest
import torch

from coupled_sde import GridBrownian, PathDriver, RecordedBrownian, ReverseSDE, TimeGrid, backward_increments, solve
from coupled_sde.noising import RectifiedFlowNoising
from coupled_sde.problems import GaussianMixture, TimeDependentOU
from coupled_sde.sde import FunctionSDE

F64 = torch.float64
GM = GaussianMixture(torch.tensor([[-2.0, 0.5], [1.5, -1.0]], dtype=F64), torch.tensor([0.4, 0.7], dtype=F64))


def test_heun_corrector_averages_time_dependent_additive_g():
    # f = 0, g = t, dW = 1 on [0, 1]: (g(0) + g(1)) / 2 = 0.5 (it returned 0.0 before)
    grid = TimeGrid([0.0, 1.0])
    sde = FunctionSDE(lambda t, y: torch.zeros_like(y), lambda t, y: t, noise_type="additive")
    src = RecordedBrownian(grid, torch.ones(1, 1, 1, 1, dtype=F64))
    assert float(solve(sde, torch.zeros(1, 1, dtype=F64), grid, "heun", noise=src).y) == 0.5
    # and the matrix form: g = t M, dW = (1, 1) -> 0.5 M (1, 1)
    M = torch.tensor([[1.0, 2.0], [0.0, 3.0], [4.0, 0.5]], dtype=F64)
    mat = FunctionSDE(lambda t, y: torch.zeros_like(y), lambda t, y: t * M, noise_type="additive", brownian_size=2)
    src2 = RecordedBrownian(grid, torch.ones(1, 1, 1, 2, dtype=F64))
    out = solve(mat, torch.zeros(1, 3, dtype=F64), grid, "heun", noise=src2).y
    assert torch.equal(out[0], 0.5 * M.sum(1))


def _forward_path(n=30, batch=16, seed=0):
    x0, _ = GM.sample(batch, torch.Generator().manual_seed(seed))
    fwd = TimeGrid.uniform(0.0, 0.9, n)
    path = solve(RectifiedFlowNoising(), x0, fwd, noise=seed, save_at="all").ys
    return path.flip(0), TimeGrid(fwd.times.flip(0))


def _reverse():
    return ReverseSDE(RectifiedFlowNoising(), lambda t, y: GM.rf_score(y, t))


@pytest.mark.parametrize("integrator", ["euler", "heun", "milstein", "sra1", "reversible_heun"])
def test_pinned_path_reconstructs_the_source_bit_for_bit_for_every_integrator(integrator):
    path, rev = _forward_path()
    y0 = torch.stack([path[0], path[0], path[0] + 0.3])
    ys = solve(_reverse(), y0, rev, integrator, noise=PathDriver(path), save_at="all").ys
    assert torch.equal(ys[:, 0], path) and torch.equal(ys[:, 1], path)
    assert not torch.equal(ys[-1, 2], path[-1])


@pytest.mark.parametrize("integrator", ["euler", "heun"])
def test_backward_increments_agree_with_the_pinned_path_driver(integrator):
    # The 6.9e-3 gap of issue 7 (Heun, 2-D mixture, 30 steps) is gone: one mechanism.
    path, rev = _forward_path()
    target0 = path[0] + torch.randn(path[0].shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    pinned = solve(_reverse(), torch.stack([path[0], target0]), rev, integrator, noise=PathDriver(path)).y[1]
    implied = backward_increments(_reverse(), path, rev, integrator)
    replayed = solve(_reverse(), target0, rev, integrator, noise=implied).y
    assert torch.allclose(replayed, pinned, atol=1e-12, rtol=0)
    back = solve(_reverse(), path[0], rev, integrator, noise=implied, save_at="all").ys
    assert torch.allclose(back, path, atol=1e-12, rtol=0)


def test_euler_implied_increments_replay_as_a_brownian_source():
    path, rev = _forward_path()
    implied = backward_increments(_reverse(), path, rev, "euler")
    back = solve(_reverse(), path[0], rev, "euler", noise=implied.brownian(), save_at="all").ys
    assert torch.allclose(back, path, atol=1e-12, rtol=0)


def test_heun_implied_increment_is_the_trapezoidal_residual():
    path, rev = _forward_path(n=10, batch=3)
    rs = _reverse()
    inc = backward_increments(rs, path, rev, "heun").increments[0]
    for i, (t, dt) in enumerate(rev.steps()):
        t1 = t + dt
        resid = path[i + 1] - path[i] - 0.5 * (rs.drift(t, path[i]) + rs.drift(t1, path[i + 1])) * dt
        gbar = 0.5 * (rs.diffusion(t, path[i]) + rs.diffusion(t1, path[i + 1]))
        assert torch.allclose(inc[:, i], resid / gbar, atol=1e-12)


def test_milstein_scalar_noise_and_derivative_free_equals_jvp_in_the_limit():
    from coupled_sde import Milstein
    from coupled_sde.problems import CommutativeLinear

    sc = CommutativeLinear(0.3, torch.tensor([[0.6], [0.2]], dtype=F64), scalar=True)
    grid = TimeGrid.uniform(0, 1, 64)
    y0 = torch.ones(50, 2, dtype=F64)
    src = GridBrownian(grid, 50, (), seed=1, dtype=F64)
    free = solve(sc, y0, grid, Milstein(), noise=src).y
    jvp = solve(sc, y0, grid, Milstein(derivative="jvp"), noise=src).y
    euler = solve(sc, y0, grid, "euler", noise=src).y
    exact = sc.solution(y0, grid, src.on_grid(grid)[0])
    assert (free - jvp).abs().mean() < 0.1 * (euler - exact).abs().mean()
    assert (jvp - exact).abs().mean() < 0.5 * (euler - exact).abs().mean()


def test_time_dependent_ou_solution_matches_a_fine_sra1_solve():
    ou = TimeDependentOU(theta=1.3, sigma0=0.4, sigma1=1.2)
    fine = TimeGrid.uniform(0, 1, 512)
    src = GridBrownian(fine, 20, (1,), seed=2, dtype=F64)
    exact = ou.solution(torch.zeros(20, 1, dtype=F64), fine, src.on_grid(fine)[0])[-1]
    em = solve(ou, torch.zeros(20, 1, dtype=F64), fine, "euler", noise=src).y
    assert (em - exact).abs().max() < 0.02


def test_sra1_with_a_seed_gets_the_levy_area_on_either_direction():
    # a seed builds an interval source that answers the Lévy area. OU forward: mean e^{-1},
    # variance (1 - e^{-2}) sigma^2 / 2; the same drift -y on a decreasing grid grows like e^{+1}.
    sde = FunctionSDE(lambda t, y: -y, lambda t, y: 0.3, noise_type="additive")
    y0 = torch.ones(4000, 1, dtype=F64)
    fwd = solve(sde, y0, TimeGrid.uniform(0, 1, 8), "sra1", noise=3).y
    assert abs(float(fwd.mean()) - math.exp(-1)) < 0.02
    assert abs(float(fwd.var()) - 0.045 * (1 - math.exp(-2))) < 0.004
    back = solve(sde, y0, TimeGrid.uniform(1, 0, 8), "sra1", noise=4).y
    assert abs(float(back.mean()) - math.e) < 0.05
