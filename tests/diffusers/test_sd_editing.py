"""VP editing on tiny random Stable Diffusion pipelines (epsilon and v-prediction).

The DDPM/DDIM step (:class:`~coupled_sde.editing.Ancestral` on :class:`~coupled_sde.editing.Members`) are checked against diffusers' own ``DDIMScheduler``
(``eta = 1`` with the same variance noise, and ``eta = 0``) and ``DDIMInverseScheduler``; sync-SDE
with identical prompts must return the source latent exactly.
"""

from __future__ import annotations

import pytest
import torch

from coupled_sde import GridBrownian, TimeGrid, solve
from coupled_sde.backends.base import Condition
from coupled_sde.backends.hf import StableDiffusionBackbone
from coupled_sde.editing import Members, editing_integrator, ode_inversion, sdedit, sync_sde

LATENT = (4, 8, 8)  # a 64x64 image
CAT, DOG = "a photo of a cat", "a photo of a dog"


@pytest.fixture(scope="module")
def sd_v(sd_v_pipe):
    return StableDiffusionBackbone(sd_v_pipe)


@pytest.fixture(params=["epsilon", "v"])
def backbone(request, sd, sd_v):
    return sd if request.param == "epsilon" else sd_v


def _latents(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *LATENT, generator=torch.Generator().manual_seed(seed))


def _unet_batches(unet: torch.nn.Module, run) -> list[int]:
    batches: list[int] = []
    handle = unet.register_forward_hook(lambda module, args, output: batches.append(int(args[0].shape[0])))
    try:
        run()
    finally:
        handle.remove()
    return batches


@pytest.mark.parametrize("n_steps, start", [(4, 0), (6, 2)])
def test_identical_prompts_return_the_source_exactly(backbone, n_steps, start):
    x = _latents()
    out = sync_sde(backbone, x, CAT, CAT, n_steps=n_steps, start=start, noise=[3, 4])
    assert torch.equal(out.latents, x)
    c = Condition(CAT, guidance=4.0, negative_prompt="blurry")
    assert torch.equal(sync_sde(backbone, x, c, c, n_steps=n_steps, start=start).latents, x)


def test_sync_sde_edits_with_one_unet_call_per_step(backbone):
    x = _latents()
    result: list = []
    batches = _unet_batches(backbone.pipe.unet, lambda: result.append(sync_sde(backbone, x, CAT, DOG, n_steps=5, start=1)))
    (out,) = result
    assert batches == [2 * 2 + 2 * 2] * 4  # [source, target] x batch 2, plus their unconditional entries
    assert out.model_calls == 4 and out.model_evaluations == 8
    assert out.latents.shape == x.shape and torch.isfinite(out.latents).all()
    assert not torch.equal(out.latents, x)


def _scheduler_chain(backbone, x_T, n_steps, eta, noise):
    """Sampling as StableDiffusionPipeline does it, with diffusers' DDIMScheduler."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(backbone.pipe.scheduler.config)
    scheduler.set_timesteps(n_steps)
    encoded = backbone.encode_conditions([Condition(CAT)])
    x = x_T
    for i, t in enumerate(scheduler.timesteps):
        out = backbone.predict(x.unsqueeze(0), int(t), encoded)[0]
        x = scheduler.step(out, t, x, eta=eta, variance_noise=None if noise is None else noise[:, i]).prev_sample
    return x


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_vp_members_step_is_diffusers_ddim_step(backbone, mode):
    n_steps, x_T = 4, _latents(seed=1)
    grid = backbone.schedule.grid(n_steps)
    ddim = editing_integrator("ddim", backbone.schedule, eta=1.0 if mode == "sde" else 0.0)
    system = Members(backbone, backbone.encode_conditions([Condition(CAT)]), 1, eta=ddim.eta, integrator=ddim)
    if mode == "sde":  # DDIM eta = 1 = DDPM ancestral step, with the driver's normals as variance noise
        ours = solve(system, x_T.unsqueeze(0), grid, ddim, noise=9).y[0]
        z = GridBrownian(grid, 2, LATENT, seed=9).normals(0, n_steps)[0]
        ref = _scheduler_chain(backbone, x_T, n_steps, 1.0, z)
    else:
        ours = solve(system, x_T.unsqueeze(0), grid, ddim).y[0]
        ref = _scheduler_chain(backbone, x_T, n_steps, 0.0, None)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=2e-5)


def test_ddim_inversion_is_diffusers_inverse_scheduler(sd):
    from diffusers import DDIMInverseScheduler

    n_steps, x0 = 4, _latents(seed=2)
    up = TimeGrid(sd.schedule.grid(n_steps).times.flip(0))
    encoded = sd.encode_conditions([Condition(CAT)])
    ddim = editing_integrator("ddim", sd.schedule, eta=0.0)
    ours = solve(Members(sd, encoded, 1, eta=0.0, integrator=ddim), x0.unsqueeze(0), up, ddim).y[0]
    scheduler = DDIMInverseScheduler.from_config(sd.pipe.scheduler.config)
    scheduler.set_timesteps(n_steps)
    x = x0
    for t in scheduler.timesteps:
        x = scheduler.step(sd.predict(x.unsqueeze(0), int(t), encoded)[0], t, x).prev_sample
    torch.testing.assert_close(ours, x, atol=2e-5, rtol=2e-5)


def test_sdedit_and_ode_inversion_run_and_are_deterministic(backbone):
    x = _latents()
    a = sdedit(backbone, x, CAT, DOG, n_steps=4, start=1, noise=[1, 2])
    assert a.model_calls == 3 and torch.isfinite(a.latents).all()
    assert torch.equal(a.latents, sdedit(backbone, x, CAT, DOG, n_steps=4, start=1, noise=[1, 2]).latents)
    b = ode_inversion(backbone, x, CAT, DOG, n_steps=4, start=1)
    assert b.model_calls == 6 and torch.isfinite(b.latents).all()
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1.0
    c = sync_sde(backbone, x, CAT, DOG, n_steps=4, start=1, mask=mask).latents
    assert torch.equal(c[..., 4:], x[..., 4:]) and not torch.equal(c[..., :4], x[..., :4])
