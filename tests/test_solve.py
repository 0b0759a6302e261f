import math

import pytest
import torch

from coupled_sde import GridBrownian, NonFiniteError, TimeGrid, solve
from coupled_sde.problems import OrnsteinUhlenbeck
from coupled_sde.sde import SDE, CoupledSDE, FunctionSDE, NoiseType

GRID = TimeGrid.uniform(0.0, 1.0, 20)


def test_same_seed_bitwise_identical_and_batch_independent():
    ou = OrnsteinUhlenbeck(1.0, 0.0, 1.0)
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    a = solve(ou, x0, GRID, noise=7, save_at="all")
    b = solve(ou, x0, GRID, noise=7, save_at="all")
    assert torch.equal(a.ys, b.ys)
    sub = solve(ou, x0[:2], GRID, noise=7).y
    assert torch.equal(sub, a.y[:2])
    per_sample = solve(ou, x0[[4]], GRID, noise=[40]).y
    assert torch.equal(per_sample[0], solve(ou, x0[[1, 4]], GRID, noise=[10, 40]).y[1])


def test_any_event_shape():
    ou = OrnsteinUhlenbeck()
    out = solve(ou, torch.zeros(2, 3, 4, 5), GRID, "heun", noise=0)
    assert out.y.shape == (2, 3, 4, 5)
    scalar_event = solve(ou, torch.zeros(7), GRID, noise=0)
    assert scalar_event.y.shape == (7,)


def test_one_batched_drift_call_per_stage_for_all_members():
    calls = []

    def drift(t, y):
        calls.append(y.shape[0])
        return -y

    sde = FunctionSDE(drift, lambda t, y: 0.5, noise_type="additive")
    sol = solve(sde, torch.zeros(3, 4, 2), GRID, "heun", noise=0, coupling="independent")
    assert sol.n_drift_evals == 2 * GRID.n_steps == len(calls)
    assert set(calls) == {12}  # K * B flattened: one call covers all members


def test_no_hidden_drift_calls_for_odes():
    calls = []
    from coupled_sde.sde import ODE

    sol = solve(ODE(lambda t, y: calls.append(1) or -y), torch.ones(2, 1), GRID, "euler")
    assert len(calls) == GRID.n_steps == sol.n_drift_evals


def test_save_at_and_callback():
    ou = OrnsteinUhlenbeck()
    seen = []
    sol = solve(
        ou, torch.zeros(2, 1), GRID, noise=0, save_at=[GRID[0], GRID[5], GRID[-1]], callback=lambda i, t, y: seen.append((i, t))
    )
    assert sol.ts == [GRID[0], GRID[5], GRID[-1]] and sol.ys.shape == (3, 2, 1)
    assert seen[0] == (0, GRID[1]) and len(seen) == 20
    clamped = solve(ou, torch.zeros(2, 1), GRID, noise=0, callback=lambda i, t, y: y.clamp(0, 0.01))
    assert clamped.y.max() <= 0.01
    with pytest.raises(ValueError, match="grid points"):
        solve(ou, torch.zeros(2, 1), GRID, noise=0, save_at=[0.123])


def test_nan_in_drift_names_step_and_member():
    class Bad(CoupledSDE):
        noise_type = NoiseType.ADDITIVE
        n_members = 2

        def drift(self, t, y):
            f = -y.clone()
            if t >= GRID[7]:
                f[1, 3] = float("nan")
            return f

        def diffusion(self, t, y):
            return 0.1

    with pytest.raises(NonFiniteError, match=r"step 7 .*member\(s\) \[1\], sample\(s\) \[3\]") as e:
        solve(Bad(), torch.zeros(2, 5, 2), GRID, noise=0)
    assert e.value.step == 7 and e.value.members == [1] and e.value.samples == [3]


def test_shape_errors_are_clear():
    bad_drift = FunctionSDE(lambda t, y: y.sum(-1), lambda t, y: 1.0, noise_type="additive")
    with pytest.raises(ValueError, match="drift returned shape"):
        solve(bad_drift, torch.zeros(3, 2), GRID, noise=0)
    bad_diag = FunctionSDE(lambda t, y: -y, lambda t, y: torch.ones(3, 5), noise_type="diagonal")
    with pytest.raises(ValueError, match="diagonal diffusion"):
        solve(bad_diag, torch.zeros(3, 2), GRID, noise=0)
    bad_general = FunctionSDE(lambda t, y: -y, lambda t, y: torch.ones(3, 2, 4), noise_type="general", brownian_size=3)
    with pytest.raises(ValueError, match="general-noise"):
        solve(bad_general, torch.zeros(3, 2), GRID, noise=0)
    with pytest.raises(ValueError, match="members, batch"):
        solve(OrnsteinUhlenbeck(), torch.zeros(3), GRID, noise=0, coupling="synchronous")
    with pytest.raises(TypeError, match="floating-point"):
        solve(OrnsteinUhlenbeck(), torch.zeros(3, 2, dtype=torch.long), GRID, noise=0)
    with pytest.raises(ValueError, match="needs noise"):
        solve(OrnsteinUhlenbeck(), torch.zeros(3, 2), GRID)
    src = GridBrownian(GRID, 4, (2,), seed=0)
    with pytest.raises(ValueError, match="shape"):
        solve(OrnsteinUhlenbeck(), torch.zeros(3, 2), GRID, noise=src)


def test_general_noise_with_two_brownian_motions():
    # dX = G dW with a fixed 2x3 matrix: X_T ~ N(0, G G^T T)
    G = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.3, 0.8]], dtype=torch.float64)

    class Gen(SDE):
        noise_type, brownian_size = NoiseType.GENERAL, 3

        def drift(self, t, y):
            return torch.zeros_like(y)

        def diffusion(self, t, y):
            return G.expand(y.shape[0], 2, 3)

    y = solve(Gen(), torch.zeros(20000, 2, dtype=torch.float64), TimeGrid.uniform(0, 1, 4), noise=0).y
    assert torch.allclose(torch.cov(y.T), G @ G.T, atol=0.05)


def test_decreasing_grid_integrates_backwards():
    ode = FunctionSDE(lambda t, y: y, lambda t, y: 0.0, noise_type="additive")
    y = solve(ode, torch.ones(1, 1, dtype=torch.float64), TimeGrid.uniform(1, 0, 1000), "heun", noise=0).y
    assert math.isclose(float(y), math.exp(-1), rel_tol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_states_are_integrated_in_float32(dtype):
    # OU mean at t = 1 from x0 = 1, theta = 0.05: exp(-0.05) = 0.951 (bf16/fp16 gave 0.25 / 0.756)
    ou = OrnsteinUhlenbeck(theta=0.05, mu=0.0, sigma=0.01)
    y = solve(ou, torch.ones(4000, 1, dtype=dtype), TimeGrid.uniform(0, 1, 1000), noise=0).y
    assert y.dtype == dtype
    assert abs(float(y.float().mean()) - math.exp(-0.05)) < 2e-3


def test_nan_from_the_diffusion_at_the_last_step_raises():
    def g(t, y):
        return torch.where(torch.tensor(t >= GRID[-2]), torch.full_like(y, float("nan")), torch.full_like(y, 0.1))

    sde = FunctionSDE(lambda t, y: -y, g, noise_type="diagonal")
    with pytest.raises(NonFiniteError, match=r"step 19 .*member\(s\) \[0\]") as e:
        solve(sde, torch.zeros(3, 2), GRID, noise=0)
    assert e.value.step == 19 and e.value.state_was_finite is False


def test_nested_grid_is_rejected():
    with pytest.raises(ValueError, match="flat"):
        solve(OrnsteinUhlenbeck(), torch.zeros(3, 1), [[0.0, 0.5], [0.5, 1.0]], noise=0)
    with pytest.raises(ValueError, match="flat"):
        TimeGrid(torch.zeros(2, 3))


def test_additive_matrix_diffusion_shape_is_checked():
    bad = FunctionSDE(lambda t, y: -y, lambda t, y: torch.ones(2, 4), noise_type="additive", brownian_size=3)
    with pytest.raises(ValueError, match="m=3"):
        solve(bad, torch.zeros(5, 2), GRID, noise=0)
