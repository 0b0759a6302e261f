"""VP (DDPM/DDIM) editing on Gaussian data with exact noise predictions (closed-form VP backbone)."""

import math

import pytest
import torch

from coupled_sde import GridBrownian, TimeGrid, solve
from coupled_sde.backends.analytic import GaussianMixtureBackbone
from coupled_sde.backends.base import Condition
from coupled_sde.editing import Members, editing_integrator, flowedit, forward_path, ode_inversion, sdedit, sync_sde
from coupled_sde.problems import GaussianMixture
from coupled_sde.schedules import DATA_TIME, vp_timesteps

GM = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 0.8]))
BB = GaussianMixtureBackbone(GM, schedule="vp")
BB_V = GaussianMixtureBackbone(GM, schedule="vp", prediction="v")
X_SRC, _ = GM.sample(4000, torch.Generator().manual_seed(0), component=0)

GM64 = GaussianMixture(GM.means.double(), torch.tensor([0.5, 0.8], dtype=torch.float64))
BB64 = GaussianMixtureBackbone(GM64, schedule="vp")
X64 = X_SRC[:200].double()


def _corr(a, b):
    return float(torch.corrcoef(torch.stack([a[:, 0], b[:, 0]]))[0, 1])


def test_backbone_schedule_is_stable_diffusions():
    assert BB.prediction == "epsilon" and BB.schedule.alphas_cumprod.dtype == torch.float64
    assert vp_timesteps(50, 1000, "leading", 1).tolist()[:3] == [981, 961, 941] and int(BB.schedule.timesteps(50)[-1]) == 1
    assert BB.schedule.alphas_cumprod[0].item() == pytest.approx(1 - 0.00085)
    assert BB.schedule.alphas_cumprod[-1].item() == pytest.approx(0.0047, abs=2e-4)
    assert BB.schedule.final_alpha_cumprod == BB.schedule.alphas_cumprod[0].item()
    grid = BB.schedule.grid(50).sub(10)
    assert grid[0] == 781.0 and grid[-1] == DATA_TIME and grid.n_steps == 40
    assert BB.schedule.alpha_sq(DATA_TIME) == BB.schedule.final_alpha_cumprod


@pytest.mark.parametrize("n_steps, start", [(3, 0), (10, 2), (50, 10), (50, 0)])
def test_same_condition_returns_the_source_exactly(n_steps, start):
    out = sync_sde(BB, X_SRC[:64], 0, 0, n_steps=n_steps, start=start, noise=3)
    assert torch.equal(out.latents, X_SRC[:64])
    assert out.model_calls == n_steps - start and out.model_evaluations == 2 * (n_steps - start)


def test_same_condition_exact_with_guidance_v_prediction_and_float64():
    c = Condition(None, guidance=3.0, negative_prompt=1)
    assert torch.equal(sync_sde(BB, X_SRC[:64], c, c, n_steps=20, start=4).latents, X_SRC[:64])
    assert torch.equal(sync_sde(BB_V, X_SRC[:64], 0, 0, n_steps=20, start=4).latents, X_SRC[:64])
    assert torch.equal(sync_sde(BB64, X64, 1, 1, n_steps=7, start=1).latents, X64)


def test_v_prediction_gives_the_epsilon_backbones_edit():
    a = sync_sde(BB, X_SRC[:200], 0, 1, n_steps=20, start=2, noise=4).latents
    b = sync_sde(BB_V, X_SRC[:200], 0, 1, n_steps=20, start=2, noise=4).latents
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    a = ode_inversion(BB, X_SRC[:200], 0, 1, n_steps=20, start=2).latents
    b = ode_inversion(BB_V, X_SRC[:200], 0, 1, n_steps=20, start=2).latents
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
    out = sync_sde(BB64, X64, src, tgt, n_steps=n_steps, start=start, noise=seeds).latents

    ts = [int(t) for t in BB64.schedule.timesteps(n_steps)[start:]] + [-1]
    ab = [BB64.schedule.alphas_cumprod[t].item() for t in ts[:-1]] + [BB64.schedule.final_alpha_cumprod]
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
    """The DDPM integrator on Members == x_{t-1} = mu(x_t) + sigma_tilde z with the driver's normals."""
    grid = BB64.schedule.grid(12).sub(2)
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ddpm = editing_integrator("ddpm", BB64.schedule, eta=1.0)
    system = Members(BB64, BB64.encode_conditions([Condition(1)]), 1, integrator=ddpm)
    out = solve(system, x_T.unsqueeze(0), grid, ddpm, noise=5).y[0]
    z = GridBrownian(grid, 50, (2,), seed=5, dtype=torch.float64).normals(0, grid.n_steps)[0]
    ab = [BB64.schedule.alpha_sq(t) for t in grid]
    x = x_T
    for i in range(grid.n_steps):
        eps = BB64.mixture.vp_epsilon(x, ab[i], 1)
        var = (1 - ab[i + 1]) / (1 - ab[i]) * (1 - ab[i] / ab[i + 1])
        x = _ddpm_mu(x, eps, ab[i], ab[i + 1]) + math.sqrt(var) * z[:, i]
    torch.testing.assert_close(out, x, atol=1e-10, rtol=1e-10)
    assert system.model_calls == grid.n_steps


def test_forward_path_is_a_markov_chain_with_exact_transitions():
    grid = BB.schedule.grid(10).sub(0)
    ab = [BB.schedule.alpha_sq(t) for t in grid]
    x0 = torch.zeros(4000, 4)
    path = forward_path(x0, grid, 11, schedule=BB.schedule).reshape(len(grid), -1)  # 16000 scalar chains
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
    out = sync_sde(BB, X_SRC, 0, 1, n_steps=100, start=0).latents
    se_mean = 0.8 / math.sqrt(len(X_SRC))
    assert torch.allclose(out.mean(0), GM.means[1], atol=5 * se_mean + 0.01)
    assert torch.allclose(out.std(0), GM.stds[1], atol=0.03)
    sde = sdedit(BB, X_SRC, 0, 1, n_steps=100, start=0).latents
    assert torch.allclose(sde.mean(0), GM.means[1], atol=5 * se_mean + 0.01)
    assert _corr(out, X_SRC) > 0.9 and abs(_corr(sde, X_SRC)) < 0.1


def test_sdedit_has_the_exact_law_of_the_ddpm_chain():
    """A Gaussian fed through the (linear) DDPM chain stays Gaussian: propagate mean and variance."""
    n_steps, start = 30, 5
    out = sdedit(BB, X_SRC, 0, 1, n_steps=n_steps, start=start, noise=2).latents
    grid = BB.schedule.grid(n_steps).sub(start)
    ab = [BB.schedule.alpha_sq(t) for t in grid]
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
        out = ode_inversion(BB, X_SRC[:500], 0, 0, n_steps=n, start=0)
        assert out.model_calls == 2 * n
        errs.append((out.latents - X_SRC[:500]).pow(2).mean().sqrt().item())
    assert errs[1] < 0.02 and errs[1] < errs[0] / 3


def test_per_sample_seeds_do_not_depend_on_the_batch():
    a = sync_sde(BB, X_SRC[:5], 0, 1, n_steps=20, noise=[10, 11, 12, 13, 14]).latents
    b = sync_sde(BB, X_SRC[[2]], 0, 1, n_steps=20, noise=[12]).latents
    assert torch.equal(a[2], b[0])
    assert torch.equal(a, sync_sde(BB, X_SRC[:5], 0, 1, n_steps=20, noise=[10, 11, 12, 13, 14]).latents)
    assert not torch.equal(a, sync_sde(BB, X_SRC[:5], 0, 1, n_steps=20, noise=[20, 11, 12, 13, 14]).latents)
    s = sdedit(BB, X_SRC[:3], 0, 1, n_steps=20, noise=[5, 6, 7]).latents
    assert torch.equal(s[1], sdedit(BB, X_SRC[[1]], 0, 1, n_steps=20, noise=[6]).latents[0])


def test_mask_keeps_the_source_exactly_outside():
    mask = torch.tensor([1.0, 0.0])  # edit the first coordinate only
    out = sync_sde(BB, X_SRC[:200], 0, 1, n_steps=20, mask=mask).latents
    assert torch.equal(out[:, 1], X_SRC[:200, 1]) and not torch.equal(out[:, 0], X_SRC[:200, 0])
    inv = ode_inversion(BB, X_SRC[:200], 0, 1, n_steps=20, mask=mask)
    assert inv.model_evaluations == 10 + 2 * 10


def test_coupling_ablations_keep_the_law_but_lose_the_source():
    sync = _corr(sync_sde(BB, X_SRC, 0, 1, n_steps=50, start=0).latents, X_SRC)
    ind = sync_sde(BB, X_SRC, 0, 1, n_steps=50, start=0, coupling="independent").latents
    assert sync > 0.9 and abs(_corr(ind, X_SRC)) < 0.1
    assert torch.allclose(ind.mean(0), GM.means[1], atol=0.06)


def test_clear_errors():
    with pytest.raises(ValueError, match="start"):
        sync_sde(BB, X_SRC[:4], 0, 1, n_steps=10, start=10)
    with pytest.raises(ValueError, match="discrete.*ddim"):
        ode_inversion(BB, X_SRC[:4], 0, 1, integrator="heun")
    with pytest.raises(ValueError, match="eta=1.0 but the integrator eta=0.5"):
        grid = BB.schedule.grid(5)
        solve(Members(BB, BB.encode_conditions([Condition(0)]), 1, integrator=editing_integrator("ddim", BB.schedule)),
              X_SRC[None, :4], grid, editing_integrator("ddim", BB.schedule, eta=0.5), noise=0)  # fmt: skip


def test_flowedit_runs_on_vp_in_its_ddim_form():
    """FlowEdit through the alpha/sigma form: identical conditions leave the source unchanged (the two
    DDIM steps cancel), different ones move it towards the target class."""
    same = flowedit(BB, X_SRC[:64], 0, 0, n_steps=20, start=4, noise=1).latents
    torch.testing.assert_close(same, X_SRC[:64], atol=1e-5, rtol=0)
    out = flowedit(BB, X_SRC[:500], 0, 1, n_steps=20, start=4, noise=1)
    assert out.model_calls == 16 and out.model_evaluations == 32
    assert (out.latents.mean(0) - GM.means[1]).norm() < (X_SRC[:500].mean(0) - GM.means[1]).norm() / 2
