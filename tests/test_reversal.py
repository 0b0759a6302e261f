import pytest
import torch

from coupled_sde import ReverseSDE, TimeGrid, backward_increments, solve
from coupled_sde.noising import RectifiedFlowNoising, RectifiedFlowReverse
from coupled_sde.problems import GaussianMixture, OrnsteinUhlenbeck

GM = GaussianMixture(torch.tensor([[-2.0, 0.5], [1.5, -1.0]], dtype=torch.float64), torch.tensor([0.4, 0.7], dtype=torch.float64))


def _forward_path(n=40, top=0.9, batch=64, seed=0):
    x0, _ = GM.sample(batch, torch.Generator().manual_seed(seed))
    fwd = TimeGrid.uniform(0.0, top, n)
    path = solve(RectifiedFlowNoising(), x0, fwd, noise=seed, save_at="all").ys
    rev = TimeGrid(fwd.times.flip(0))
    return path.flip(0), rev


@pytest.mark.parametrize("integrator", ["euler", "heun"])
def test_path_driven_back_by_its_own_backward_increments_is_recovered(integrator):
    path, rev = _forward_path()
    reverse = ReverseSDE(RectifiedFlowNoising(), lambda t, y: GM.rf_score(y, t))
    noise = backward_increments(reverse, path, rev, integrator)
    back = solve(reverse, path[0], rev, integrator, noise=noise, save_at="all").ys
    assert torch.allclose(back, path, atol=1e-10, rtol=0)


def test_reverse_sde_general_form_matches_rectified_flow_form():
    y = torch.randn(5, 2, dtype=torch.float64)
    anderson = ReverseSDE(RectifiedFlowNoising(), lambda t, y: GM.rf_score(y, t))
    closed = RectifiedFlowReverse(lambda x, s: GM.rf_velocity(x, s))
    assert torch.allclose(anderson.drift(0.3, y), closed.drift(0.3, y), atol=1e-12)


def test_backward_increments_become_brownian_as_the_grid_refines():
    # The residual-form increments equal W-bar's only in the continuous limit: their standard
    # deviation approaches 1 at first order in the step (0.84, 0.95, 0.986 at 20, 80, 320 steps).
    reverse = ReverseSDE(RectifiedFlowNoising(), lambda t, y: GM.rf_score(y, t))
    gaps = []
    for n in (20, 80, 320):
        path, rev = _forward_path(n=n, batch=2000, seed=1)
        inc = backward_increments(reverse, path, rev).on_grid(rev)[0]  # (B, N, 2)
        z = inc / rev.times.diff().abs().sqrt().reshape(1, -1, 1)
        assert abs(float(z.mean())) < 0.02
        gaps.append(abs(float(z.std()) - 1.0))
    assert gaps[0] > 2.5 * gaps[1] > 2.5 * 2.5 * gaps[2] and gaps[2] < 0.03


def test_reverse_sde_recovers_the_data_marginals():
    g = TimeGrid.uniform(0.95, 0.0, 200)
    gen = torch.Generator().manual_seed(3)
    x0, _ = GM.sample(20000, gen)
    xs = (1 - 0.95) * x0 + 0.95 * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    out = solve(RectifiedFlowReverse(lambda x, s: GM.rf_velocity(x, s)), xs, g, "heun", noise=4).y
    ref, _ = GM.sample(20000, torch.Generator().manual_seed(5))
    assert torch.allclose(out.mean(0), ref.mean(0), atol=0.06)
    assert torch.allclose(out.std(0), ref.std(0), atol=0.06)


def test_backward_increments_input_checks():
    ou = OrnsteinUhlenbeck()
    g = TimeGrid.uniform(1, 0, 4)
    with pytest.raises(ValueError, match="points"):
        backward_increments(ReverseSDE(ou, lambda t, y: -y), torch.zeros(3, 2, 1), g)
    from coupled_sde.problems import GeometricBrownianMotion

    with pytest.raises(ValueError, match="additive"):
        backward_increments(ReverseSDE(GeometricBrownianMotion(), lambda t, y: -y), torch.zeros(5, 2, 1), g)
