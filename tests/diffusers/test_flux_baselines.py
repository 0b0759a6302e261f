"""RF-Inversion, RF-Solver and FireFlow on a tiny random FLUX: parity with their reference loops.

The references are transcribed below from diffusers' community ``pipeline_flux_rf_inversion.py``
(``invert`` and the controlled ``__call__`` loop) and, in ``reference_rf_editors.py``, from the
authors' ``sampling.py`` of RF-Solver-Edit and FireFlow, talking to the pipeline's own pieces (scheduler, ``encode_prompt``, packing, the
transformer), not to coupled_sde.
"""

import numpy as np
import pytest
import torch
from reference_rf_editors import reference_ode_edit

from coupled_sde.backends.base import Condition
from coupled_sde.editing import edit_latents, ode_inversion
from coupled_sde.editing.rf_inversion import rf_inversion
from coupled_sde.schedules import calculate_shift

SRC, TGT = "a photo of a cat", "a photo of a dog"


def _latents(flux, images):
    return flux.encode_images(images[:1], [torch.Generator().manual_seed(0)])


@torch.no_grad()
def _community_rf_inversion(
    pipe, image_latents, y_1, source_prompt, prompt, n, gamma, eta, stop, guidance_scale, msl, decay_eta=False, eta_decay_power=1.0
):
    """The community pipeline's ``invert`` + ``__call__(inverted_latents=...)`` (batch 1, packed)."""
    transformer = pipe.transformer
    b, c, h, w = image_latents.shape
    image_latents = pipe._pack_latents(image_latents, b, c, h, w)
    y_1 = pipe._pack_latents(y_1, b, c, h, w)
    latent_image_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", transformer.dtype)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    mu = calculate_shift(
        (h // 2) * (w // 2),
        scheduler.config.get("base_image_seq_len", 256),
        scheduler.config.get("max_image_seq_len", 4096),
        scheduler.config.get("base_shift", 0.5),
        scheduler.config.get("max_shift", 1.15),
    )
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), device="cpu", mu=mu)
    timesteps, sigmas = scheduler.timesteps, scheduler.sigmas

    # invert (Algorithm 1)
    prompt_embeds, pooled_prompt_embeds, text_ids = pipe.encode_prompt(
        prompt=source_prompt, prompt_2=source_prompt, device="cpu", max_sequence_length=msl
    )
    guidance = torch.full([1], 0.0, dtype=torch.float32)
    Y_t = image_latents
    N = len(sigmas)
    for i in range(N - 1):
        t_i = torch.tensor(i / (N), dtype=Y_t.dtype)
        timestep = t_i.clone().repeat(b)  # the pipeline: torch.tensor(t_i, dtype=Y_t.dtype).repeat(batch_size)
        u_t_i = transformer(
            hidden_states=Y_t, timestep=timestep, guidance=guidance, pooled_projections=pooled_prompt_embeds,
            encoder_hidden_states=prompt_embeds, txt_ids=text_ids, img_ids=latent_image_ids, return_dict=False,
        )[0]
        u_t_i_cond = (y_1 - Y_t) / (1 - t_i)
        u_hat_t_i = u_t_i + gamma * (u_t_i_cond - u_t_i)
        Y_t = Y_t + u_hat_t_i * (sigmas[i] - sigmas[i + 1])

    # controlled reverse ODE (Algorithm 2)
    prompt_embeds, pooled_prompt_embeds, text_ids = pipe.encode_prompt(
        prompt=prompt, prompt_2=None, device="cpu", max_sequence_length=msl
    )
    start_timestep, stop_timestep = int(0 * n), min(int(stop * n), n)
    guidance = torch.full([1], guidance_scale, dtype=torch.float32).expand(b)
    latents, y_0 = Y_t, image_latents.clone()
    for i, t in enumerate(timesteps):
        t_i = 1 - t / 1000
        noise_pred = transformer(
            hidden_states=latents, timestep=t.expand(b).to(latents.dtype) / 1000, guidance=guidance,
            pooled_projections=pooled_prompt_embeds, encoder_hidden_states=prompt_embeds, txt_ids=text_ids,
            img_ids=latent_image_ids, return_dict=False,
        )[0]
        v_t = -noise_pred
        v_t_cond = (y_0 - latents) / (1 - t_i)
        eta_t = eta if start_timestep <= i < stop_timestep else 0.0
        if decay_eta:
            eta_t = eta_t * (1 - i / n) ** eta_decay_power
        v_hat_t = v_t + eta_t * (v_t_cond - v_t)
        latents = latents + v_hat_t * (sigmas[i] - sigmas[i + 1])
    return pipe._unpack_latents(latents, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor, pipe.vae_scale_factor)


@pytest.mark.parametrize("decay", [0.0, 2.0])
def test_rf_inversion_matches_the_community_pipeline(flux, flux_pipe, images, decay):
    """With and without the pipeline's ``decay_eta`` (``eta_decay_power = 2``)."""
    x0 = _latents(flux, images)
    n = 8
    y1 = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    ours = rf_inversion(
        flux, x0, Condition("", guidance=0.0), Condition(TGT, guidance=3.5), n_steps=n, gamma=0.5, eta=0.9,
        eta_stop=n // 2, eta_decay_power=decay, inversion="community", noise=y1,
    )
    ref = _community_rf_inversion(
        flux_pipe, x0, y1, "", TGT, n, 0.5, 0.9, 0.5, 3.5, flux.max_sequence_length, decay_eta=decay > 0, eta_decay_power=decay
    )
    assert ours.model_calls == 2 * n and ours.model_evaluations == 2 * n
    err = float((ours.latents - ref).abs().max() / ref.abs().max())
    print(f"relative parity error {err:.2e}")
    assert err < 1e-5, err


def test_rf_inversion_closed_forms(flux, images):
    """gamma = 1 inverts onto the straight line to y1; eta = 1 on every step walks it back to the source."""
    x0 = _latents(flux, images)
    y1 = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    out = rf_inversion(flux, x0, SRC, TGT, n_steps=6, gamma=1.0, eta=1.0, eta_stop=6, noise=y1)
    assert (out.latents - x0).abs().max() < 1e-5 * x0.abs().max()
    # with eta = 0 the edit depends on the target prompt; the same seed gives the same edit
    a = edit_latents(flux, x0, "rf-inversion", SRC, TGT, n_steps=6, eta=0.0, seed=3)
    b = edit_latents(flux, x0, "rf-inversion", SRC, TGT, n_steps=6, eta=0.0, seed=3)
    assert torch.equal(a.latents, b.latents) and not torch.allclose(a.latents, x0, atol=1e-3)
    with pytest.raises(ValueError, match="mask"):
        rf_inversion(flux, x0, SRC, TGT, n_steps=6, mask=torch.ones_like(x0))


@pytest.mark.parametrize("kind", ["rf-solver", "fireflow"])
def test_ode_inversion_with_rf_solver_and_fireflow_matches_the_papers_loops(flux, flux_pipe, images, kind):
    x0 = _latents(flux, images)
    n, start = 6, 1
    ours = ode_inversion(flux, x0, SRC, TGT, n_steps=n, start=start, integrator=kind)
    ref, _ = reference_ode_edit(flux_pipe, flux, x0, n, start, kind.replace("-", "_"), SRC, TGT)
    steps = n - start
    assert ours.model_calls == (4 * steps if kind == "rf-solver" else 2 * (steps + 1))
    err = float((ours.latents - ref).abs().max() / ref.abs().max())
    print(f"relative parity error {err:.2e}")
    assert err < 1e-5, err
