"""BrownianTree: laws of increments, bridges and space-time Lévy area; purity; additivity."""

import math

import pytest
import torch
from scipy import stats

from coupled_sde import BrownianTree, GridBrownian, TimeGrid, solve
from coupled_sde.problems import OrnsteinUhlenbeck

N = 6000


def _ks(x: torch.Tensor, var: float) -> float:
    return float(stats.kstest((x.double() / math.sqrt(var)).flatten().numpy(), "norm").pvalue)


def test_increments_have_variance_of_the_interval_in_any_order():
    bt = BrownianTree(0.0, 2.0, N, (), seed=1, tol=1e-4, levy_area=False, dtype=torch.float64)
    for s, t in ((0.0, 2.0), (0.1234, 0.5678), (1.9, 1.95), (0.3, 0.3 + 1e-3)):
        assert _ks(bt.increment(s, t), t - s) > 1e-3
    # non-overlapping increments are independent
    a, b = bt.increment(0.2, 0.7)[0], bt.increment(0.7, 1.6)[0]
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 5 / math.sqrt(N)


@pytest.mark.parametrize("levy", [False, True])
def test_bridge_law_at_a_midpoint_and_at_an_arbitrary_point(levy):
    bt = BrownianTree(0.0, 1.0, N, (), seed=2, tol=1e-3, levy_area=levy, dtype=torch.float64)
    w1 = bt.increment(0.0, 1.0)[0]
    for u in (0.5, 0.3):
        wu = bt.increment(0.0, u)[0]
        assert _ks(wu - u * w1, u * (1 - u)) > 1e-3  # W(u) | W(1) ~ N(u W(1), u(1-u))
        assert abs(float(torch.corrcoef(torch.stack([wu - u * w1, w1]))[0, 1])) < 5 / math.sqrt(N)


def test_space_time_levy_area_law_and_foster_bridge():
    h = 2.0
    bt = BrownianTree(0.0, h, N, (), seed=3, tol=1e-4, levy_area=True, dtype=torch.float64)
    dw, H = (v[0] for v in bt.space_time_levy_area(0.0, h))
    assert _ks(H, h / 12) > 1e-3 and _ks(dw, h) > 1e-3
    assert abs(float(torch.corrcoef(torch.stack([dw, H]))[0, 1])) < 5 / math.sqrt(N)
    # Foster's midpoint bridge: W(h/2) = dW/2 + 3H/2 + sqrt(h)/4 Z, Z independent of (dW, H)
    wm = bt.increment(0.0, h / 2)[0]
    resid = wm - (dw / 2 + 1.5 * H)
    assert _ks(resid, h / 16) > 1e-3
    assert abs(float(torch.corrcoef(torch.stack([resid, H]))[0, 1])) < 5 / math.sqrt(N)
    # sub-intervals above and below the dyadic nodes: H ~ N(0, len/12), independent of dW
    for s, t in ((0.3, 0.31), (0.5, 0.5 + 2e-3), (1.0, 1.7)):
        dws, Hs = (v[0] for v in bt.space_time_levy_area(s, t))
        assert _ks(Hs, (t - s) / 12) > 1e-3
        assert abs(float(torch.corrcoef(torch.stack([dws, Hs]))[0, 1])) < 5 / math.sqrt(N)
    # a decreasing step: the backward motion's area is -H
    dwr, Hr = bt.space_time_levy_area(1.7, 1.0)
    dwf, Hf = bt.space_time_levy_area(1.0, 1.7)
    assert torch.equal(dwr, dwf) and torch.equal(Hr, -Hf)


def test_levy_area_matches_a_fine_riemann_sum_of_the_path():
    # H = (1/h) int (W_u - W_s - (u-s)/h dW) du, approximated on a grid far finer than the interval
    bt = BrownianTree(0.0, 1.0, 200, (), seed=4, tol=2.0**-14, levy_area=True, dtype=torch.float64)
    s, t, n = 0.25, 0.75, 1024
    us = [s + (t - s) * i / n for i in range(n + 1)]
    steps = bt.on_grid(TimeGrid(us))  # (1, B, n)
    w = torch.cat([torch.zeros(1, 1, 200, dtype=torch.float64), steps.cumsum(2).permute(2, 0, 1)])  # W_u - W_s
    dw = w[-1]
    lin = torch.tensor([(u - s) / (t - s) for u in us], dtype=torch.float64).view(-1, 1, 1)
    integrand = w - lin * dw
    riemann = ((integrand[1:] + integrand[:-1]) / 2).mean(0)  # trapezoid, then / h * h
    _, H = bt.space_time_levy_area(s, t)
    assert torch.allclose(H, riemann, atol=2e-3)


def test_additivity_and_query_order_independence():
    q = [(0.0, 0.37), (0.37, 0.81), (0.81, 1.0), (0.0, 1.0), (0.2, 0.6), (0.6, 0.9), (0.2, 0.9)]
    a = BrownianTree(0.0, 1.0, 64, (3,), seed=5, tol=1e-5, levy_area=True, dtype=torch.float64)
    b = BrownianTree(0.0, 1.0, 64, (3,), seed=5, tol=1e-5, levy_area=True, dtype=torch.float64)
    ra = {k: a.space_time_levy_area(*k) for k in q}
    rb = {k: b.space_time_levy_area(*k) for k in reversed(q)}
    for k in q:
        assert torch.equal(ra[k][0], rb[k][0]) and torch.equal(ra[k][1], rb[k][1])
    inc = {k: v[0] for k, v in ra.items()}
    assert torch.allclose(inc[(0.0, 0.37)] + inc[(0.37, 0.81)] + inc[(0.81, 1.0)], inc[(0.0, 1.0)], atol=1e-12)
    # Lévy area composes: h H = h1 H1 + h2 H2 + (h2 dW1 - h1 dW2)/2 (the cross term of the chord)
    (w1, H1), (w2, H2), (w12, H) = ra[(0.2, 0.6)], ra[(0.6, 0.9)], ra[(0.2, 0.9)]
    h1, h2 = 0.4, 0.3
    assert torch.allclose(w12, w1 + w2, atol=1e-12)
    assert torch.allclose((h1 + h2) * H, h1 * H1 + h2 * H2 + (h2 * w1 - h1 * w2) / 2, atol=1e-12)


def test_samples_do_not_depend_on_the_batch_and_per_sample_seeds():
    big = BrownianTree(0.0, 1.0, 10, (2,), seed=6, tol=1e-4)
    small = BrownianTree(0.0, 1.0, 3, (2,), seed=6, tol=1e-4)
    assert torch.equal(big.increment(0.1, 0.45)[:, :3], small.increment(0.1, 0.45))
    per = BrownianTree(0.0, 1.0, None, (2,), seed=[7, 8, 9], tol=1e-4)
    alone = BrownianTree(0.0, 1.0, None, (2,), seed=[9], tol=1e-4)
    assert torch.equal(per.increment(0.2, 0.3)[:, 2], alone.increment(0.2, 0.3)[:, 0])
    f64 = BrownianTree(0.0, 1.0, None, (2,), seed=[7, 8, 9], tol=1e-4, dtype=torch.float64)
    assert torch.allclose(f64.increment(0.2, 0.3).float(), per.increment(0.2, 0.3))
    assert not torch.equal(per.increment(0.2, 0.3), per.with_seed([1, 2, 3]).increment(0.2, 0.3))


def test_tolerance_controls_refinement_and_bad_input():
    fine = BrownianTree(0.0, 1.0, 4, (), seed=8, tol=1e-6)
    assert fine.depth == 20 and BrownianTree(0.0, 1.0, 4, (), seed=8, tol=0.3).depth == 2
    # dyadic nodes above the coarser tolerance are shared: the same value at t = 1/4
    coarse = BrownianTree(0.0, 1.0, 4, (), seed=8, tol=0.1)
    assert torch.equal(fine.increment(0.0, 0.25), coarse.increment(0.0, 0.25))
    with pytest.raises(ValueError, match="outside"):
        fine.increment(0.0, 1.5)
    with pytest.raises(ValueError, match="levy_area"):
        BrownianTree(0.0, 1.0, 4, (), seed=8, levy_area=False).space_time_levy_area(0.0, 0.5)
    with pytest.raises(ValueError, match="positive length"):
        BrownianTree(1.0, 1.0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        BrownianTree(0.0, 1.0, None, seed=3)


def test_on_grid_drives_solve_like_its_increments():
    grid = TimeGrid.uniform(0.0, 1.0, 50)
    bt = BrownianTree(0.0, 1.0, 16, (2,), seed=9, tol=1e-4, dtype=torch.float64)
    table = bt.on_grid(grid)
    assert table.shape == (1, 16, 50, 2)
    assert torch.allclose(table[:, :, 7], bt.increment(grid[7], grid[8]))
    assert torch.allclose(table.sum(2), bt.increment(0.0, 1.0), atol=1e-12)
    ou = OrnsteinUhlenbeck(1.0, 0.5, 0.3)
    x0 = torch.zeros(16, 2, dtype=torch.float64)
    from coupled_sde import RecordedBrownian

    a = solve(ou, x0, grid, "euler", noise=bt).y
    b = solve(ou, x0, grid, "euler", noise=RecordedBrownian(grid, table)).y
    assert torch.allclose(a, b)
    # a decreasing grid gets the backward increments W(s) - W(t)
    rev = bt.on_grid(TimeGrid(list(reversed([float(u) for u in grid]))))
    assert torch.allclose(rev, table.flip(2), atol=1e-12)
    assert isinstance(GridBrownian, type)
