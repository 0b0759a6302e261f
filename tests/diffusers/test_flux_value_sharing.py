"""Attention value sharing (RF-Solver-Edit / FireFlow feature sharing) on a tiny random FLUX, against
the authors' loops and feature store as transcribed in ``reference_rf_editors.py``."""

import pytest
import torch
from conftest import MAX_SEQUENCE_LENGTH
from reference_rf_editors import reference_ode_edit

from coupled_sde.backends.base import Condition
from coupled_sde.backends.hf import FluxBackbone, tiny_flux_pipeline
from coupled_sde.editing import ode_inversion
from coupled_sde.editing.members import Members
from coupled_sde.editing.value_sharing import SharedValues
from coupled_sde.grid import TimeGrid
from coupled_sde.solve import solve

SRC, TGT = "a photo of a cat", "a photo of a dog"
N_STEPS, INJECT = 5, 2


@pytest.fixture(scope="module")
def flux4_pipe():
    """A tiny FLUX.1-dev-like pipeline with four single-stream blocks (sharing takes blocks 2 and 3)."""
    return tiny_flux_pipeline(seed=3, single_layers=4)


@pytest.fixture(scope="module")
def flux4(flux4_pipe):
    return FluxBackbone(flux4_pipe, max_sequence_length=MAX_SEQUENCE_LENGTH)


def _latents(flux, images, n=1):
    return flux.encode_images(images[:n], [torch.Generator().manual_seed(k) for k in range(n)])


@pytest.mark.parametrize("kind", ["rf-solver", "fireflow"])
def test_value_sharing_matches_the_authors_feature_sharing(flux4, flux4_pipe, images, kind):
    assert flux4.value_blocks == (2, 3)  # the last 18 of 38 blocks, in proportion
    x0 = _latents(flux4, images)
    ours = ode_inversion(flux4, x0, SRC, TGT, n_steps=N_STEPS, start=0, integrator=kind, share_values=INJECT)
    ref, stored = reference_ode_edit(flux4_pipe, flux4, x0, N_STEPS, 0, kind.replace("-", "_"), SRC, TGT, INJECT, (2, 3))
    # RF-Solver stores both stages of the shared steps, FireFlow the midpoints only (it reuses the first stage)
    assert stored == INJECT * 2 * (2 if kind == "rf-solver" else 1)
    err = float((ours.latents - ref).abs().max() / ref.abs().max())
    plain = ode_inversion(flux4, x0, SRC, TGT, n_steps=N_STEPS, start=0, integrator=kind)
    effect = float((ours.latents - plain.latents).abs().max() / ref.abs().max())
    print(f"{kind}: relative parity error {err:.2e}, effect of sharing {effect:.2e}")
    assert err < 1e-5, err
    assert effect > 1e-3, effect  # the shared values do change the edit
    assert ours.model_calls == plain.model_calls
    assert ode_inversion(flux4, x0, SRC, TGT, n_steps=N_STEPS, start=0, integrator=kind, share_values=0).latents.equal(
        plain.latents
    )


def test_shared_values_are_per_sample_with_a_mask_and_processors_come_back(flux4, images):
    """Batch of two with a mask (two members: 4 rows per call): each sample reads its own values."""
    x = _latents(flux4, images, 2)
    mask = torch.zeros_like(x[:1])
    mask[..., :, 2:] = 1.0
    processors = [b.attn.processor for b in flux4.pipe.transformer.single_transformer_blocks]
    both = ode_inversion(flux4, x, SRC, TGT, n_steps=4, start=1, integrator="rf-solver", share_values=2, mask=mask)
    assert [b.attn.processor for b in flux4.pipe.transformer.single_transformer_blocks] == processors
    for k in range(2):
        one = ode_inversion(flux4, x[k : k + 1], SRC, TGT, n_steps=4, start=1, integrator="rf-solver", share_values=2, mask=mask)
        assert torch.allclose(both.latents[k : k + 1], one.latents, rtol=1e-5, atol=1e-5 * float(one.latents.abs().max()))


def test_the_store_follows_the_grid_stages(flux4, images):
    """Keys: (editing interval, stage in the step) for the first `steps` intervals; the edit reads them all."""
    x = _latents(flux4, images)
    grid = flux4.schedule.grid(4, tuple(x.shape[1:]))
    shared = SharedValues(grid, 2, 1)
    seen = []
    with flux4.share_attention_values(shared):
        up = Members(flux4, flux4.encode_conditions([Condition(SRC)]), 1, eta=0.0)
        up.on_call = lambda t: (shared.at(t), seen.append(shared._key))
        z = solve(up, x.unsqueeze(0), TimeGrid(grid.times.flip(0)), "rf-solver", callback=shared.recording()).y
        assert [k for k in seen if k is not None] == [(1, 0.0), (1, 0.5), (0, 0.0), (0, 0.5)]
        assert shared.keys() == [((j, s), b) for j in (0, 1) for s in (0.0, 0.5) for b in (2, 3)]
        down = Members(flux4, flux4.encode_conditions([Condition(TGT)]), 1, eta=0.0)
        down.on_call = shared.at
        solve(down, z, grid, "rf-solver", callback=shared.injecting())
    assert shared.injected == 8


def test_sharing_errors_are_clear_and_early(flux4, sd, images, monkeypatch):
    x = _latents(flux4, images)
    with pytest.raises(ValueError, match="exceeds the edit's 3 steps"):
        ode_inversion(flux4, x, SRC, TGT, n_steps=4, start=1, integrator="rf-solver", share_values=4)
    calls = []
    monkeypatch.setattr(type(sd), "predict", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="share_values needs a backbone that can share attention values"):
        ode_inversion(sd, torch.zeros(1, 4, 8, 8), SRC, TGT, n_steps=4, start=1, share_values=1)
    assert not calls
    with pytest.raises(ValueError, match="share_values=-1 is outside"):
        ode_inversion(flux4, x, SRC, TGT, n_steps=4, start=1, share_values=-1)
    with pytest.raises(ValueError, match="value_blocks must be indices of the 4 single-stream blocks"):
        FluxBackbone(flux4.pipe, value_blocks=[4])


def test_fused_projections_are_refused_and_an_error_restores_the_processors(images):
    pipe = tiny_flux_pipeline(seed=3, single_layers=2)
    flux = FluxBackbone(pipe, max_sequence_length=MAX_SEQUENCE_LENGTH)
    x = _latents(flux, images)
    processors = [b.attn.processor for b in pipe.transformer.single_transformer_blocks]

    def broken(layer, value):
        raise RuntimeError("tap failed")

    with pytest.raises(RuntimeError, match="tap failed"):
        shared = SharedValues(flux.schedule.grid(3, tuple(x.shape[1:])), 1, 1)
        shared.tap = broken
        with flux.share_attention_values(shared):
            flux.predict(torch.zeros((1, *x.shape)), 0.5, flux.encode_conditions([Condition(SRC)]))
    assert [b.attn.processor for b in pipe.transformer.single_transformer_blocks] == processors
    pipe.transformer.fuse_qkv_projections()
    with pytest.raises(ValueError, match="unfuse_qkv_projections"):
        ode_inversion(flux, x, SRC, TGT, n_steps=3, start=1, integrator="fireflow", share_values=1)


def test_sharing_works_behind_model_cpu_offload(images):
    """accelerate's offload hooks sit on the transformer; the wrapped processors sit inside it."""
    plain = FluxBackbone(tiny_flux_pipeline(seed=3, single_layers=2), max_sequence_length=MAX_SEQUENCE_LENGTH)
    pipe = tiny_flux_pipeline(seed=3, single_layers=2)
    pipe.enable_model_cpu_offload(device="cpu")
    offloaded = FluxBackbone(pipe, max_sequence_length=MAX_SEQUENCE_LENGTH)
    assert hasattr(pipe.transformer, "_hf_hook")
    x = _latents(plain, images)
    a = ode_inversion(plain, x, SRC, TGT, n_steps=3, start=0, integrator="rf-solver", share_values=2)
    b = ode_inversion(offloaded, x, SRC, TGT, n_steps=3, start=0, integrator="rf-solver", share_values=2)
    torch.testing.assert_close(b.latents, a.latents, rtol=1e-5, atol=1e-5)
