"""The schedules against diffusers' own schedulers (the numbers every model family is trained with)."""

import pytest
import torch

from coupled_sde.schedules import DiscreteVP, RectifiedFlow


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("n_steps", [4, 28])
def test_static_shift_is_flow_match_euler_discrete(shift, n_steps):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)  # SD3 uses shift 3.0
    s = torch.linspace(1.0, 1.0 / n_steps, n_steps, dtype=torch.float64)
    scheduler.set_timesteps(sigmas=s.tolist())
    ours = RectifiedFlow.from_config(scheduler.config).grid(n_steps).times
    torch.testing.assert_close(ours.float(), scheduler.sigmas, rtol=1e-6, atol=1e-7)


def test_dynamic_shift_is_flow_match_euler_discrete_with_mu():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    schedule = RectifiedFlow.from_config(scheduler.config, patch=2)
    latent = (16, 96, 64)  # 768 x 512 pixels
    s = torch.linspace(1.0, 1.0 / 20, 20, dtype=torch.float64)
    scheduler.set_timesteps(sigmas=s.tolist(), mu=schedule.mu(latent))
    torch.testing.assert_close(schedule.grid(20, latent).times.float(), scheduler.sigmas, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", ["DDIMScheduler", "DDPMScheduler"])
@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_vp_alphas_are_the_schedulers(cls, beta_schedule):
    import diffusers

    scheduler = getattr(diffusers, cls)(beta_schedule=beta_schedule, beta_start=0.00085, beta_end=0.012)
    schedule = DiscreteVP.from_config(scheduler.config, scheduler.alphas_cumprod)
    torch.testing.assert_close(schedule.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spacing, offset", [("leading", 1), ("trailing", 0), ("linspace", 0)])
def test_vp_grid_is_ddims_timesteps_then_the_final_alpha(spacing, offset):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=False)
    scheduler.set_timesteps(25)
    schedule = DiscreteVP.from_config(scheduler.config, scheduler.alphas_cumprod)
    grid = schedule.grid(25)
    assert grid.tolist()[:-1] == [float(t) for t in scheduler.timesteps]
    assert schedule.alpha_sq(grid[-1]) == pytest.approx(float(scheduler.final_alpha_cumprod), rel=1e-6)
