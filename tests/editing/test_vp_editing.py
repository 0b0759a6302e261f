"""VP (DDPM/DDIM) editing on Gaussian data with exact noise predictions (closed-form VP backbone)."""

import math

import pytest
import torch

from coupled_sde import GridBrownian, TimeGrid, solve
from coupled_sde.backends.analytic import GaussianMixtureBackbone
from coupled_sde.backends.analytic_vp import GaussianMixtureVPBackbone, leading_timesteps
from coupled_sde.backends.base import Condition
from coupled_sde.editing.vp import DATA_TIMESTEP, VPMembers, vp_alpha_bar, vp_forward_path, vp_grid
from coupled_sde.editing.vp_methods import vp_ode_inversion, vp_sdedit, vp_sync_sde
from coupled_sde.problems import GaussianMixture

GM = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 0.8]))
BB = GaussianMixtureVPBackbone(GM)
BB_V = GaussianMixtureVPBackbone(GM, prediction="v")
X_SRC, _ = GM.sample(4000, torch.Generator().manual_seed(0), component=0)

GM64 = GaussianMixture(GM.means.double(), torch.tensor([0.5, 0.8], dtype=torch.float64))
BB64 = GaussianMixtureVPBackbone(GM64)
X64 = X_SRC[:200].double()


def _corr(a, b):
    return float(torch.corrcoef(torch.stack([a[:, 0], b[:, 0]]))[0, 1])


def test_backbone_schedule_is_stable_diffusions():
    assert BB.prediction == "epsilon" and BB.alphas_cumprod.dtype == torch.float64
    assert leading_timesteps(50).tolist()[:3] == [981, 961, 941] and int(BB.timesteps(50)[-1]) == 1
    assert BB.alphas_cumprod[0].item() == pytest.approx(1 - 0.00085)
    assert BB.alphas_cumprod[-1].item() == pytest.approx(0.0047, abs=2e-4)
    assert BB.final_alpha_cumprod == BB.alphas_cumprod[0].item()
    grid = vp_grid(BB, 50, 10)
    assert grid[0] == 781.0 and grid[-1] == DATA_TIMESTEP and grid.n_steps == 40
    assert vp_alpha_bar(BB, DATA_TIMESTEP) == BB.final_alpha_cumprod


@pytest.mark.parametrize("n_steps, start", [(3, 0), (10, 2), (50, 10), (50, 0)])
def test_same_condition_returns_the_source_exactly(n_steps, start):
    out = vp_sync_sde(BB, X_SRC[:64], 0, 0, n_steps=n_steps, start=start, seed=3)
    assert torch.equal(out.latents, X_SRC[:64])
    assert out.model_calls == n_steps - start and out.model_evaluations == 2 * (n_steps - start)


def test_same_condition_exact_with_guidance_v_prediction_and_float64():
    c = Condition(None, guidance=3.0, negative_prompt=1)
    assert torch.equal(vp_sync_sde(BB, X_SRC[:64], c, c, n_steps=20, start=4).latents, X_SRC[:64])
    assert torch.equal(vp_sync_sde(BB_V, X_SRC[:64], 0, 0, n_steps=20, start=4).latents, X_SRC[:64])
    assert torch.equal(vp_sync_sde(BB64, X64, 1, 1, n_steps=7, start=1).latents, X64)


def test_v_prediction_gives_the_epsilon_backbones_edit():
    a = vp_sync_sde(BB, X_SRC[:200], 0, 1, n_steps=20, start=2, seed=4).latents
    b = vp_sync_sde(BB_V, X_SRC[:200], 0, 1, n_steps=20, start=2, seed=4).latents
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    a = vp_ode_inversion(BB, X_SRC[:200], 0, 1, n_steps=20, start=2).latents
    b = vp_ode_inversion(BB_V, X_SRC[:200], 0, 1, n_steps=20, start=2).latents
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def _ddpm_mu(x, eps, a, a_prev):
    """The DDPM posterior mean q(x_prev | x, x0_hat) written in Ho et al.'s form (strided)."""
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    r = a / a_prev
    return math.sqrt(a_prev) * (1 - r) / (1 - a) * x0 + math.sqrt(r) * (1 - a_prev) / (1 - a) * x


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_sync_sde_is_the_hand_written_ddpm_chain_of_method_section_4(guidance):
    n_steps, start, seeds = 25, 3, [7 + b for b in range(len(X64))]
    src, tgt = Condition(0, guidance), Condition(1, guidance)
    out = vp_sync_sde(BB64, X64, src, tgt, n_steps=n_steps, start=start, seed=seeds).latents

    ts = [int(t) for t in BB64.timesteps(n_steps)[start:]] + [-1]
    ab = [BB64.alphas_cumprod[t].item() for t in ts[:-1]] + [BB64.final_alpha_cumprod]
    M = len(ts) - 1
    # forward Markov chain from the source, with the same per-sample normals
    xi = GridBrownian(TimeGrid([float(t) for t in ts]), None, (2,), seed=seeds).normals(0, M)[0].double()
    path = [None] * M + [X64]
    for i in range(M - 1, -1, -1):
        path[i] = math.sqrt(ab[i] / ab[i + 1]) * path[i + 1] + math.sqrt(1 - ab[i] / ab[i + 1]) * xi[:, i]
    enc = BB64.encode_conditions([src, tgt])
    y = path[0]
    for i in range(M):
        eps = BB64.predict(torch.stack([path[i], y]), ts[i], enc)
        n_t = path[i + 1] - _ddpm_mu(path[i], eps[0], ab[i], ab[i + 1])  # n_t = x^src_{t-1} - mu(x^src_t, c_src)
        y = _ddpm_mu(y, eps[1], ab[i], ab[i + 1]) + n_t  # y_{t-1} = mu(y_t, c_tgt) + n_t
    torch.testing.assert_close(out, y, atol=1e-10, rtol=1e-10)


def test_one_member_sampler_is_the_ddpm_ancestral_chain():
    """Euler–Maruyama on VPMembers == x_{t-1} = mu(x_t) + sigma_tilde z with the driver's normals."""
    grid = vp_grid(BB64, 12, 2)
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    system = VPMembers(BB64, BB64.encode_conditions([Condition(1)]), 1, grid, "sde")
    out = solve(system, x_T.unsqueeze(0), grid, "euler", noise=5).y[0]
    z = GridBrownian(grid, 50, (2,), seed=5, dtype=torch.float64).normals(0, grid.n_steps)[0]
    ab = [vp_alpha_bar(BB64, t) for t in grid]
    x = x_T
    for i in range(grid.n_steps):
        eps = BB64.mixture.vp_epsilon(x, ab[i], 1)
        var = (1 - ab[i + 1]) / (1 - ab[i]) * (1 - ab[i] / ab[i + 1])
        x = _ddpm_mu(x, eps, ab[i], ab[i + 1]) + math.sqrt(var) * z[:, i]
    torch.testing.assert_close(out, x, atol=1e-10, rtol=1e-10)
    assert system.model_calls == grid.n_steps


def test_forward_path_is_a_markov_chain_with_exact_transitions():
    grid = vp_grid(BB, 10, 0)
    ab = [vp_alpha_bar(BB, t) for t in grid]
    x0 = torch.zeros(4000, 4)
    path = vp_forward_path(x0, grid, ab, seed=11).reshape(len(grid), -1)  # 16000 scalar chains
    assert torch.equal(path[-1], x0.reshape(-1))
    a_d = ab[-1]
    for i in range(grid.n_steps):
        var_i, var_next = 1 - ab[i] / a_d, 1 - ab[i + 1] / a_d
        assert path[i].var().item() == pytest.approx(var_i, abs=0.035)
        cov = (path[i] * path[i + 1]).mean().item()
        # Markov: Cov(x_i, x_{i+1}) = sqrt(a_i / a_{i+1}) Var(x_{i+1}); independent q-samples would give 0.
        assert cov == pytest.approx(math.sqrt(ab[i] / ab[i + 1]) * var_next, abs=0.025)
    assert (path[0] * path[1]).mean().item() > 0.5


def test_sync_sde_has_the_target_marginals_and_stays_close_to_the_source():
    out = vp_sync_sde(BB, X_SRC, 0, 1, n_steps=100, start=0).latents
    se_mean = 0.8 / math.sqrt(len(X_SRC))
    assert torch.allclose(out.mean(0), GM.means[1], atol=5 * se_mean + 0.01)
    assert torch.allclose(out.std(0), GM.stds[1], atol=0.03)
    sde = vp_sdedit(BB, X_SRC, 1, n_steps=100, start=0).latents
    assert torch.allclose(sde.mean(0), GM.means[1], atol=5 * se_mean + 0.01)
    assert _corr(out, X_SRC) > 0.9 and abs(_corr(sde, X_SRC)) < 0.1


def test_sdedit_has_the_exact_law_of_the_ddpm_chain():
    """A Gaussian fed through the (linear) DDPM chain stays Gaussian: propagate mean and variance."""
    n_steps, start = 30, 5
    out = vp_sdedit(BB, X_SRC, 1, n_steps=n_steps, start=start, seed=2).latents
    grid = vp_grid(BB, n_steps, start)
    ab = [vp_alpha_bar(BB, t) for t in grid]
    m0, s0, m1, s1 = GM.means[0].double(), 0.5, GM.means[1].double(), 0.8
    r = ab[0] / ab[-1]
    mean, var = math.sqrt(r) * m0, r * s0**2 + 1 - r
    for i in range(grid.n_steps):
        a, ap = ab[i], ab[i + 1]
        sig2 = (1 - ap) / (1 - a) * (1 - a / ap)
        p, q = math.sqrt(ap / a), math.sqrt(1 - ap - sig2) - math.sqrt(ap / a * (1 - a))
        k = math.sqrt(1 - a) / (a * s1**2 + 1 - a)  # eps_hat = k (x - sqrt(a) m1)
        mean = p * mean + q * k * (mean - math.sqrt(a) * m1)
        var = (p + q * k) ** 2 * var + sig2
    torch.testing.assert_close(out.mean(0).double(), mean, atol=4 * math.sqrt(var / len(X_SRC)), rtol=0)
    assert out.std(0).tolist() == pytest.approx([math.sqrt(var)] * 2, abs=0.025)
    assert math.sqrt(var) < 0.79  # 30 DDPM steps lose variance: the check above is not the target's


def test_ddim_inversion_round_trip_reconstructs():
    errs = []
    for n in (50, 200):
        out = vp_ode_inversion(BB, X_SRC[:500], 0, 0, n_steps=n, start=0)
        assert out.model_calls == 2 * n
        errs.append((out.latents - X_SRC[:500]).pow(2).mean().sqrt().item())
    assert errs[1] < 0.02 and errs[1] < errs[0] / 3


def test_per_sample_seeds_do_not_depend_on_the_batch():
    a = vp_sync_sde(BB, X_SRC[:5], 0, 1, n_steps=20, seed=[10, 11, 12, 13, 14]).latents
    b = vp_sync_sde(BB, X_SRC[[2]], 0, 1, n_steps=20, seed=[12]).latents
    assert torch.equal(a[2], b[0])
    assert torch.equal(a, vp_sync_sde(BB, X_SRC[:5], 0, 1, n_steps=20, seed=[10, 11, 12, 13, 14]).latents)
    assert not torch.equal(a, vp_sync_sde(BB, X_SRC[:5], 0, 1, n_steps=20, seed=[20, 11, 12, 13, 14]).latents)
    s = vp_sdedit(BB, X_SRC[:3], 1, n_steps=20, seed=[5, 6, 7]).latents
    assert torch.equal(s[1], vp_sdedit(BB, X_SRC[[1]], 1, n_steps=20, seed=[6]).latents[0])


def test_mask_keeps_the_source_exactly_outside():
    mask = torch.tensor([1.0, 0.0])  # edit the first coordinate only
    out = vp_sync_sde(BB, X_SRC[:200], 0, 1, n_steps=20, mask=mask).latents
    assert torch.equal(out[:, 1], X_SRC[:200, 1]) and not torch.equal(out[:, 0], X_SRC[:200, 0])
    inv = vp_ode_inversion(BB, X_SRC[:200], 0, 1, n_steps=20, mask=mask)
    assert inv.model_evaluations == 10 + 2 * 10


def test_coupling_ablations_keep_the_law_but_lose_the_source():
    sync = _corr(vp_sync_sde(BB, X_SRC, 0, 1, n_steps=50, start=0).latents, X_SRC)
    ind = vp_sync_sde(BB, X_SRC, 0, 1, n_steps=50, start=0, coupling="independent").latents
    assert sync > 0.9 and abs(_corr(ind, X_SRC)) < 0.1
    assert torch.allclose(ind.mean(0), GM.means[1], atol=0.06)


def test_clear_errors():
    with pytest.raises(ValueError, match="VP diffusion backbone"):
        vp_sync_sde(GaussianMixtureBackbone(GM), X_SRC[:4], 0, 1)
    with pytest.raises(ValueError, match="start"):
        vp_sync_sde(BB, X_SRC[:4], 0, 1, n_steps=10, start=10)
    with pytest.raises(ValueError, match="Euler"):
        vp_ode_inversion(BB, X_SRC[:4], 0, 1, integrator="heun")
    grid = vp_grid(BB, 5)
    with pytest.raises(ValueError, match="decrease"):
        VPMembers(BB, BB.encode_conditions([Condition(0)]), 1, TimeGrid(grid.times.flip(0)), "sde")
    system = VPMembers(BB, BB.encode_conditions([Condition(0)]), 1, grid, "sde")
    with pytest.raises(ValueError, match="Euler"):
        solve(system, X_SRC[None, :4], grid, "heun", noise=0)
