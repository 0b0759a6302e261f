"""Noise schedules against closed forms: marginals, conversions, forward SDE, transitions, DDIM steps."""

import math

import pytest
import torch

from coupled_sde import solve
from coupled_sde.noising import ForwardNoising
from coupled_sde.schedules import DATA_TIME, DiscreteVP, RectifiedFlow, calculate_shift

RF = RectifiedFlow()
VP = DiscreteVP.scaled_linear()


def test_rectified_flow_grid_static_and_dynamic_shift():
    g = RF.grid(4).tolist()
    assert g == [1.0, 0.75, 0.5, 0.25, 0.0]
    s = torch.linspace(1, 1 / 4, 4, dtype=torch.float64)
    sd3 = RectifiedFlow(shift=3.0).grid(4).times[:-1]
    torch.testing.assert_close(sd3, 3 * s / (1 + 2 * s), rtol=1e-15, atol=0)
    flux = RectifiedFlow(dynamic=(256, 4096, 0.5, 1.15), patch=2)
    mu = calculate_shift(64 * 64)  # a 1024^2 FLUX image: 128 x 128 latent, 2x2 patches
    assert mu == pytest.approx(1.15)
    got = flux.grid(28, (16, 128, 128)).times[:-1]
    s = torch.linspace(1, 1 / 28, 28, dtype=torch.float64)
    torch.testing.assert_close(got, math.exp(mu) / (math.exp(mu) + 1 / s - 1), rtol=1e-12, atol=0)
    assert flux.grid(28, (16, 64, 64))[4] < got[4]  # fewer tokens, smaller shift


def test_vp_grid_and_alpha_at_the_data_point():
    g = VP.grid(50)
    assert g[0] == 981.0 and g[-2] == 1.0 and g[-1] == DATA_TIME and g.n_steps == 50
    assert VP.alpha_sq(DATA_TIME) == VP.final_alpha_cumprod == float(VP.alphas_cumprod[0])
    assert VP.alpha_sq(500) + VP.sigma_sq(500) == 1.0
    with pytest.raises(ValueError, match="training timestep"):
        VP.alpha_sq(0.5)


@pytest.mark.parametrize("schedule, t", [(RF, 0.3), (RF, 0.9), (VP, 999), (VP, 200), (RectifiedFlow(3.0), 0.5)])
@pytest.mark.parametrize("kind", ["flow", "epsilon", "v", "x0"])
def test_prediction_conversions_round_trip_to_the_truth(schedule, t, kind):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    a, s = schedule.alpha(t), schedule.sigma(t)
    x = a * x0 + s * eps
    truth = {"flow": eps - x0, "epsilon": eps, "v": a * eps - s * x0, "x0": x0}
    torch.testing.assert_close(schedule.to_epsilon(truth[kind], x, t, kind), eps, rtol=0, atol=1e-10)
    torch.testing.assert_close(schedule.to_x0(truth[kind], x, t, kind), x0, rtol=0, atol=1e-9)
    for to in truth:
        torch.testing.assert_close(schedule.convert(truth[kind], x, t, kind, to), truth[to], rtol=0, atol=1e-9)


def test_forward_sde_has_the_schedules_marginals():
    """Integrate dX = f X dt + g dW from x0 = 1 to sigma = 0.8: mean alpha, variance sigma^2."""
    from coupled_sde import TimeGrid

    x0 = torch.ones(20000, 1, dtype=torch.float64)
    out = solve(ForwardNoising(RF), x0, TimeGrid.uniform(0.0, 0.8, 400), noise=1).y
    assert out.mean().item() == pytest.approx(0.2, abs=0.01)
    assert out.std().item() == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize("schedule, s, t", [(RF, 0.2, 0.7), (VP, DATA_TIME, 501), (VP, 101, 901)])
def test_exact_transitions_compose_to_the_marginal(schedule, s, t):
    s0 = schedule.data_time
    a1, b1 = schedule.transition(s0, s)
    a2, b2 = schedule.transition(s, t)
    a, b = schedule.transition(s0, t)
    assert a1 * a2 == pytest.approx(a, rel=1e-12)
    assert a2 * a2 * b1 * b1 + b2 * b2 == pytest.approx(b * b, rel=1e-12)
    # from the data point the transition is the marginal itself (up to VP's final alpha)
    assert a * math.sqrt(schedule.alpha_sq(s0)) == pytest.approx(schedule.alpha(t), rel=1e-12)


def test_ddim_coefficients_are_euler_on_rectified_flow_and_ddpm_at_eta_1():
    p, q, s = RF.ddim_coefficients(0.8, 0.5, 0.0)
    # x' = p x + q eps with eps = x + (1 - sigma) u must equal x + (sigma' - sigma) u
    assert p + q == pytest.approx(1.0) and q * (1 - 0.8) == pytest.approx(0.5 - 0.8) and s == 0
    a, a_prev = VP.alpha_sq(501), VP.alpha_sq(481)
    _, _, s = VP.ddim_coefficients(501, 481, 1.0)
    assert s * s == pytest.approx((1 - a_prev) / (1 - a) * (1 - a / a_prev), rel=1e-12)  # the DDPM posterior


def test_reverse_drift_of_rectified_flow_in_both_forms():
    """With a flow prediction the closed form x/(1 - sigma) + 2u; from eps the general formula agrees."""
    x, u = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    t = 0.6
    torch.testing.assert_close(RF.reverse_drift(x, u, "flow", t, 1.0), x / (1 - t) + 2 * u)
    eps = x + (1 - t) * u
    for eta in (0.0, 0.5, 1.0):
        torch.testing.assert_close(RF.reverse_drift(x, eps, "epsilon", t, eta), RF.reverse_drift(x, u, "flow", t, eta))
    assert RF.reverse_diffusion(t, 0.5) == pytest.approx(0.5 * math.sqrt(2 * t / (1 - t)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="start >= 1"):
        RF.check_start(1.0)
    with pytest.raises(ValueError, match="n_steps"):
        RF.grid(0)
    with pytest.raises(ValueError, match="discrete"):
        ForwardNoising(VP)
    with pytest.raises(ValueError, match="unknown prediction"):
        RF.convert(torch.zeros(1), torch.zeros(1), 0.5, "flow", "score")
