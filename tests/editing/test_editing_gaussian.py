"""Editing methods on Gaussian data with exact velocities (closed-form backbone)."""

import math

import pytest
import torch

from coupled_sde import NonFiniteError
from coupled_sde.backends.analytic import GaussianMixtureBackbone
from coupled_sde.backends.base import Condition
from coupled_sde.editing import edit_latents, flowedit, ode_inversion, sdedit, sync_sde
from coupled_sde.problems import GaussianMixture

GM = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 0.8]))
BB = GaussianMixtureBackbone(GM)
X_SRC, _ = GM.sample(4000, torch.Generator().manual_seed(0), component=0)


def _corr(a, b):
    return float(torch.corrcoef(torch.stack([a[:, 0], b[:, 0]]))[0, 1])


@pytest.mark.parametrize("integrator", ["euler", "heun"])
@pytest.mark.parametrize("n_steps, start", [(3, 1), (10, 2), (28, 4)])
def test_same_prompt_returns_the_source_exactly(integrator, n_steps, start):
    out = sync_sde(BB, X_SRC[:64], 0, 0, n_steps=n_steps, start=start, integrator=integrator, noise=3)
    assert torch.equal(out.latents, X_SRC[:64])


def test_same_prompt_exact_with_the_exact_forward_rule_and_guidance():
    c = Condition(0, guidance=2.5)
    out = sync_sde(BB, X_SRC[:64], c, c, n_steps=12, start=2, forward_rule="exact")
    assert torch.equal(out.latents, X_SRC[:64])


def test_sync_sde_has_the_target_marginals_and_stays_close_to_the_source():
    out = sync_sde(BB, X_SRC, 0, 1, n_steps=28, start=1).latents
    se_mean = 0.8 / math.sqrt(len(X_SRC))
    assert torch.allclose(out.mean(0), GM.means[1], atol=5 * se_mean + 0.01)
    assert torch.allclose(out.std(0), GM.stds[1], atol=0.03)
    sde = sdedit(BB, X_SRC, 0, 1, n_steps=28, start=1).latents
    assert torch.allclose(sde.std(0), GM.stds[1], atol=0.03)
    assert _corr(out, X_SRC) > 0.9 and _corr(sde, X_SRC) < 0.1


def test_heun_sync_sde_also_has_target_marginals():
    out = sync_sde(BB, X_SRC, 0, 1, n_steps=14, start=1, integrator="heun").latents
    assert torch.allclose(out.mean(0), GM.means[1], atol=0.05)
    assert torch.allclose(out.std(0), GM.stds[1], atol=0.04)


def test_coupling_ablations_are_less_faithful_than_synchronous():
    sync = _corr(sync_sde(BB, X_SRC, 0, 1, start=1).latents, X_SRC)
    ind = sync_sde(BB, X_SRC, 0, 1, start=1, coupling="independent").latents
    rho = _corr(sync_sde(BB, X_SRC, 0, 1, start=1, coupling=0.5).latents, X_SRC)
    refl = sync_sde(BB, X_SRC, 0, 1, start=1, coupling="reflection").latents
    assert sync > rho > _corr(ind, X_SRC)
    for out in (ind, refl):  # every coupling keeps the target law
        assert torch.allclose(out.std(0), GM.stds[1], atol=0.05)
        assert torch.allclose(out.mean(0), GM.means[1], atol=0.06)


def test_per_sample_seeds_do_not_depend_on_the_batch():
    a = sync_sde(BB, X_SRC[:5], 0, 1, noise=[10, 11, 12, 13, 14]).latents
    b = sync_sde(BB, X_SRC[[2]], 0, 1, noise=[12]).latents
    assert torch.equal(a[2], b[0])
    c = sync_sde(BB, X_SRC[:5], 0, 1, noise=[10, 11, 12, 13, 14]).latents
    assert torch.equal(a, c)
    assert not torch.equal(a, sync_sde(BB, X_SRC[:5], 0, 1, noise=[20, 11, 12, 13, 14]).latents)
    s1 = sdedit(BB, X_SRC[:3], 0, 1, noise=[5, 6, 7]).latents
    assert torch.equal(s1[1], sdedit(BB, X_SRC[[1]], 0, 1, noise=[6]).latents[0])
    f1 = flowedit(BB, X_SRC[:3], 0, 1, noise=[5, 6, 7]).latents
    assert torch.equal(f1[2], flowedit(BB, X_SRC[[2]], 0, 1, noise=[7]).latents[0])


def test_mask_keeps_the_source_exactly_outside():
    mask = torch.tensor([1.0, 0.0])  # edit the first coordinate only
    for method in ("sync-sde", "flowedit"):
        out = edit_latents(BB, X_SRC[:200], method, 0, 1, mask=mask).latents
        assert torch.equal(out[:, 1], X_SRC[:200, 1]), method
        assert (out[:, 0] - X_SRC[:200, 0]).abs().mean() > 1.0
    # ODE inversion reconstructs only approximately: outside the mask it keeps its own reconstruction
    inv = ode_inversion(BB, X_SRC[:200], 0, 1, mask=mask, n_steps=50, start=2).latents
    rec = ode_inversion(BB, X_SRC[:200], 0, 0, n_steps=50, start=2).latents
    assert torch.allclose(inv[:, 1], rec[:, 1], atol=1e-5)
    assert (inv[:, 0] - rec[:, 0]).abs().mean() > 1.0
    with pytest.raises(ValueError, match="does not support masks"):
        edit_latents(BB, X_SRC[:4], "sdedit", 0, 1, mask=mask)


def _flowedit_transcription(x_src, eps, sigmas, n_max, n_min, ws, wt):
    """FlowEdit's update rule written out (Kulikov et al., ICCV 2025), with the given noise per step."""
    N = len(sigmas) - 1
    src, tgt = Condition(0, guidance=ws), Condition(1, guidance=wt)
    enc_s, enc_t = BB.encode_conditions([src]), BB.encode_conditions([tgt])
    z = x_src.clone()
    xt_tar = None
    for i in range(N):
        if N - i > n_max:
            continue
        t, t_next = float(sigmas[i]), float(sigmas[i + 1])
        if N - i > n_min:
            z_src = (1 - t) * x_src + t * eps[:, i]
            z_tar = z + z_src - x_src
            v = BB.predict(z_tar[None], t, enc_t)[0] - BB.predict(z_src[None], t, enc_s)[0]
            z = z + (t_next - t) * v
        else:
            if i == N - n_min:
                xt_tar = z + (1 - t) * x_src + t * eps[:, i] - x_src
            xt_tar = xt_tar + (t_next - t) * BB.predict(xt_tar[None], t, enc_t)[0]
    return xt_tar if n_min > 0 else z


@pytest.mark.parametrize("n_min", [0, 3])
def test_flowedit_equals_a_direct_transcription(n_min):
    from coupled_sde import GridBrownian, TimeGrid

    x = X_SRC[:16]
    sig = BB.schedule.grid(12).times
    eps = GridBrownian(TimeGrid(sig), 16, (2,), seed=4).normals(0, 12)[0]
    ours = flowedit(BB, x, Condition(0, 1.5), Condition(1, 3.0), n_steps=12, n_max=9, n_min=n_min, noise=4)
    ref = _flowedit_transcription(x, eps, sig, 9, n_min, 1.5, 3.0)
    assert torch.allclose(ours.latents, ref, atol=1e-6)
    assert ours.model_calls == 9 and ours.model_evaluations == 2 * (9 - n_min) + n_min


def test_model_call_counts():
    assert sync_sde(BB, X_SRC[:4], 0, 1, n_steps=28, start=4).model_evaluations == 48  # the paper's count
    assert sync_sde(BB, X_SRC[:4], 0, 1, n_steps=28, start=4).model_calls == 24  # one batched call per step
    assert sdedit(BB, X_SRC[:4], 0, 1, n_steps=28, start=4).model_calls == 24
    assert ode_inversion(BB, X_SRC[:4], 0, 1, n_steps=28, start=4).model_calls == 48
    assert ode_inversion(BB, X_SRC[:4], 0, 1, n_steps=28, start=4, integrator="heun").model_calls == 96


def test_start_index_zero_is_rejected_with_the_reason():
    with pytest.raises(ValueError, match="divides by"):
        sync_sde(BB, X_SRC[:4], 0, 1, start=0)
    with pytest.raises(ValueError, match="outside"):
        sync_sde(BB, X_SRC[:4], 0, 1, n_steps=10, start=10)


def test_nan_from_the_model_names_the_step_and_member():
    class NaNTarget(GaussianMixtureBackbone):
        def predict(self, x, t, encoded):
            u = super().predict(x, t, encoded)
            if t < 0.5:
                u[1, 2] = float("nan")
            return u

    with pytest.raises(NonFiniteError, match=r"member\(s\) \[1\], sample\(s\) \[2\]"):
        sync_sde(NaNTarget(GM), X_SRC[:4], 0, 1, n_steps=10, start=1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        sync_sde(BB, X_SRC[:4, :1], 0, 1)  # wrong event shape for the model
    with pytest.raises(ValueError, match="batch"):
        sync_sde(BB, torch.zeros(2), 0, 1)
    with pytest.raises(ValueError, match="NaN"):
        sync_sde(BB, torch.full((2, 2), float("nan")), 0, 1)
    with pytest.raises(ValueError, match="mask"):
        sync_sde(BB, X_SRC[:4], 0, 1, mask=torch.ones(3))
    with pytest.raises(ValueError, match="component"):
        sync_sde(BB, X_SRC[:4], 0, 7)
    with pytest.raises(ValueError, match="unknown method"):
        edit_latents(BB, X_SRC[:4], "magic", 0, 1)
    with pytest.raises(ValueError, match="n_min"):
        flowedit(BB, X_SRC[:4], 0, 1, n_max=3, n_min=5)
