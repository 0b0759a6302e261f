import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from coupled_sde import Correlated, GridBrownian, Independent, Reflection, Synchronous, TimeGrid, solve
from coupled_sde.problems import OrnsteinUhlenbeck
from coupled_sde.sde import FunctionSDE

COUPLINGS = {
    "synchronous": lambda: Synchronous(),
    "independent": lambda: Independent(),
    "correlated": lambda: Correlated(-0.4),
    "reflection": lambda: Reflection(),
}


def _member_increments(coupling, K, seed, dim):
    g = TimeGrid.uniform(0, 1, 1)
    S = coupling.n_streams(K)
    z = GridBrownian(g, 3000, (dim,), seed=seed, streams=S, dtype=torch.float64).on_grid(g)[:, :, 0]
    states = torch.randn(K, 3000, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return coupling.combine(z, states) if coupling.state_dependent else coupling.combine(z)


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(sorted(COUPLINGS)), seed=st.integers(0, 10_000), dim=st.integers(1, 4))
def test_every_coupling_preserves_each_members_marginal_law(name, seed, dim):
    out = _member_increments(COUPLINGS[name](), 2, seed, dim)
    for k in range(2):
        assert stats.kstest(out[k].flatten().numpy(), "norm").pvalue > 1e-4


def test_correlation_is_a_correlation_not_a_covariance():
    out = _member_increments(Correlated(0.6), 2, 1, 1)
    r = torch.corrcoef(torch.stack([out[0].flatten(), out[1].flatten()]))[0, 1]
    assert abs(r - 0.6) < 0.05
    assert abs(out[1].std() - 1.0) < 0.05
    with pytest.raises(ValueError, match="unit diagonal"):
        Correlated([[2.0, 0.5], [0.5, 2.0]])
    with pytest.raises(ValueError, match="semi-definite"):
        Correlated([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        Correlated(1.5)


def test_correlated_rho_one_is_synchronous_and_equicorrelated_for_k3():
    z = torch.randn(3, 5, 2, dtype=torch.float64)
    c = Correlated(1.0)
    c.n_streams(3)
    out = c.combine(z)
    assert torch.allclose(out[0], out[1], atol=1e-12) and torch.allclose(out[1], out[2], atol=1e-12)
    out3 = _member_increments(Correlated(0.3), 3, 2, 1)
    C = torch.corrcoef(out3.reshape(3, -1))
    assert torch.allclose(C, torch.tensor([[1, 0.3, 0.3], [0.3, 1, 0.3], [0.3, 0.3, 1]], dtype=C.dtype), atol=0.06)


def test_reflection_mirrors_along_the_separation():
    z = torch.tensor([[[1.0, 2.0]]])
    states = torch.tensor([[[0.0, 0.0]], [[3.0, 0.0]]])
    out = Reflection().combine(z, states)
    assert torch.allclose(out[1], torch.tensor([[-1.0, 2.0]]))
    met = Reflection().combine(z, torch.zeros(2, 1, 2))
    assert torch.equal(met[0], met[1])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(0.1, 2.0))
def test_synchronous_coupling_of_identical_sdes_gives_identical_paths(seed, sigma):
    sde = FunctionSDE(lambda t, y: torch.sin(y) - y, lambda t, y: sigma * torch.cos(y), noise_type="diagonal")
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))
    sol = solve(sde, torch.stack([x0, x0]), TimeGrid.uniform(0, 1, 50), noise=seed, coupling="synchronous", save_at="all")
    assert torch.equal(sol.ys[:, 0], sol.ys[:, 1])


@settings(max_examples=8, deadline=None)
@given(theta=st.floats(0.2, 3.0), seed=st.integers(0, 1000))
def test_ou_members_under_synchronous_coupling_contract_exponentially(theta, seed):
    ou = OrnsteinUhlenbeck(theta=theta, mu=0.3, sigma=0.8)
    x0 = torch.randn(2, 16, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    grid = TimeGrid.uniform(0, 2, 400)
    sol = solve(ou, x0, grid, "heun", noise=seed, coupling="synchronous", save_at="all")
    d0 = x0[1] - x0[0]
    for i in (100, 250, 400):
        # the difference solves the deterministic ODE D' = -theta D, so Heun is second-order accurate
        expect = d0 * math.exp(-theta * grid[i])
        assert torch.allclose(sol.ys[i, 1] - sol.ys[i, 0], expect, atol=1e-4 * max(1, theta**3))


def test_independent_coupling_does_not_contract_as_fast():
    ou = OrnsteinUhlenbeck(theta=1.0, sigma=1.0)
    x0 = torch.zeros(2, 256, 1, dtype=torch.float64)
    x0[1] += 1.0
    sync = solve(ou, x0, TimeGrid.uniform(0, 3, 300), noise=0, coupling="synchronous").y
    ind = solve(ou, x0, TimeGrid.uniform(0, 3, 300), noise=0, coupling="independent").y
    assert (sync[1] - sync[0]).abs().mean() < 0.06 < (ind[1] - ind[0]).abs().mean()


def test_reflection_with_one_member_keeps_its_increment():
    grid = TimeGrid.uniform(0, 1, 10)
    y0 = torch.zeros(1, 4, 2)
    one = solve(OrnsteinUhlenbeck(), y0, grid, noise=2, coupling="reflection").y
    sync = solve(OrnsteinUhlenbeck(), y0, grid, noise=2, coupling="synchronous").y
    assert torch.equal(one, sync)
