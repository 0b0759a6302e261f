"""A direct transcription of the authors' sync-SDE FLUX.1 editing loop (Zhang & Scott, rectified flow).

Deliberately written *without* anything from ``coupled_sde`` (no backbone, grid, Brownian source,
coupling or integrator): it talks to the ``FluxPipeline``'s own pieces -- ``encode_prompt``,
``_pack_latents`` / ``_unpack_latents``, ``_prepare_latent_image_ids`` and the transformer -- the way
the reference pipeline does, so that the engine's sync-SDE can be checked against it
(same weights, source latent and standard normal draws => same edited latent, up to float32
rounding).

Conventions, exactly:

* Grid. ``sigmas`` has ``N + 1`` entries ``sigma_0 = 1 > sigma_1 > ... > sigma_N = 0``: FLUX's
  schedule ``s = linspace(1, 1/N, N)`` (float64), ``mu = calculate_shift(h/2 * w/2, base_image_seq_len,
  max_image_seq_len, base_shift, max_shift)`` from the pipeline's scheduler config,
  ``sigma_i = e^mu / (e^mu + 1/s_i - 1)``, then ``sigma_N = 0`` appended (float64 throughout). A
  caller may pass its own ``sigmas`` instead. The edit runs over the steps ``i = i0, ..., N - 1``
  (``i0 >= 1``; ``t0 = sigma_{i0}``), ``Delta_i = sigma_i - sigma_{i+1} > 0``.
* Noise. ``xi`` has shape ``(N - i0, *x0.shape)``; ``xi[j]`` is the standard normal draw ``xi_k`` of
  grid interval ``k = i0 + j``, i.e. of ``[sigma_{k+1}, sigma_k]``. So ``xi[0]`` belongs to the
  first (noisiest) interval and ``xi[-1]`` to the last one, ending at ``sigma_N = 0``.
* Forward path (midpoint rule). ``s_k = (sigma_k + sigma_{k+1}) / 2``, ``m_k = sqrt(2 s_k) / (1 -
  s_k)^1.5 * sqrt(Delta_k)``, ``B_N = 0``, ``B_i = B_{i+1} + m_i xi_i`` (accumulated from the data
  end ``k = N - 1`` down to ``i0``, in float32), ``X_i = (1 - sigma_i) (x0 + B_i)``.
* Drift. ``b(x, sigma, c) = -2 u(x, sigma, c) - x / (1 - sigma)`` with ``u`` the transformer output
  (an estimate of ``eps - x0``), called with ``timestep = sigma_i`` (diffusers multiplies by 1000
  inside) and guidance embedding 1.0, **separately** for the source (at ``X_i``) and the target (at
  ``X_i + D``), both at the batch size of ``x0``.
* Update. ``D_{i0} = 0``; ``D <- D + (b(X_i + D, sigma_i, c_tgt) - b(X_i, sigma_i, c_src)) Delta_i``
  for ``i = i0, ..., N - 1``; the edit is ``x0 + D`` (= ``Y_N``, since ``X_N = x0``).

State arithmetic is float32 (scalars from the float64 grid); the transformer runs in its own dtype.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def flux_reference_sigmas(pipe, n_steps: int, latent_height: int, latent_width: int) -> torch.Tensor:
    """FLUX's dynamic-shift grid (FluxPipeline's), float64, length ``n_steps + 1``, last entry 0."""
    config = pipe.scheduler.config
    base_seq, max_seq = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    tokens = (latent_height // 2) * (latent_width // 2)
    slope = (max_shift - base_shift) / (max_seq - base_seq)
    mu = tokens * slope + (base_shift - slope * base_seq)
    s = np.linspace(1.0, 1.0 / n_steps, n_steps)
    sigmas = math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0))
    return torch.from_numpy(np.append(sigmas, 0.0))


def _velocity(pipe, x: torch.Tensor, sigma: float, embeds, pooled, text_ids, image_ids) -> torch.Tensor:
    """``u(x, sigma, c)`` for unpacked float32 latents ``(B, C, h, w)``: one transformer call, guidance 1.0."""
    transformer = pipe.transformer
    batch, channels, height, width = x.shape
    packed = pipe._pack_latents(x, batch, channels, height, width).to(transformer.dtype)
    guidance = torch.full((batch,), 1.0, dtype=torch.float32) if transformer.config.guidance_embeds else None
    out = transformer(
        hidden_states=packed,
        timestep=torch.full((batch,), sigma, dtype=transformer.dtype),
        guidance=guidance,
        pooled_projections=pooled.expand(batch, -1),
        encoder_hidden_states=embeds.expand(batch, -1, -1),
        txt_ids=text_ids,
        img_ids=image_ids,
        joint_attention_kwargs=None,
        return_dict=False,
    )[0]
    vae_scale = pipe.vae_scale_factor
    return pipe._unpack_latents(out, height * vae_scale, width * vae_scale, vae_scale).float()


@torch.no_grad()
def reference_flux_sync_sde(
    pipe,
    x0: torch.Tensor,
    source_prompt: str,
    target_prompt: str,
    n_steps: int,
    i0: int,
    xi: torch.Tensor,
    *,
    sigmas: torch.Tensor | None = None,
    max_sequence_length: int = 512,
) -> torch.Tensor:
    """The authors' sync-SDE edit of the source latent ``x0`` (unpacked, normalised, ``(B, 16, h, w)``).

    Args:
        pipe: a ``FluxPipeline`` (CPU, any transformer dtype).
        x0: the source latent, float32.
        source_prompt, target_prompt: the two prompts (guidance embedding 1.0 for both).
        n_steps: ``N``, the number of grid intervals of the full schedule.
        i0: start index, ``1 <= i0 < N``.
        xi: standard normal draws, shape ``(N - i0, *x0.shape)``; ``xi[j]`` drives interval ``i0 + j``.
        sigmas: optional grid of length ``N + 1`` (default :func:`flux_reference_sigmas`).
        max_sequence_length: T5 prompt length passed to ``pipe.encode_prompt``.

    Returns:
        The edited latent ``x0 + D_N``, float32, shape of ``x0``.
    """
    if not 1 <= i0 < n_steps:
        raise ValueError(f"need 1 <= i0 < n_steps, got i0={i0}, n_steps={n_steps}")
    if tuple(xi.shape) != (n_steps - i0, *x0.shape):
        raise ValueError(f"xi must have shape {(n_steps - i0, *x0.shape)}, got {tuple(xi.shape)}")
    x0 = x0.float()
    height, width = x0.shape[-2:]
    sig = flux_reference_sigmas(pipe, n_steps, height, width) if sigmas is None else sigmas.to(torch.float64)
    sig = [float(v) for v in sig]

    src_embeds, src_pooled, text_ids = pipe.encode_prompt(source_prompt, max_sequence_length=max_sequence_length)
    tgt_embeds, tgt_pooled, _ = pipe.encode_prompt(target_prompt, max_sequence_length=max_sequence_length)
    image_ids = pipe._prepare_latent_image_ids(x0.shape[0], height // 2, width // 2, x0.device, pipe.transformer.dtype)

    # Forward path on the grid: B_N = 0, B_i = B_{i+1} + m_i xi_i for i = N-1, ..., i0.
    brownian = {n_steps: torch.zeros_like(x0)}
    for k in range(n_steps - 1, i0 - 1, -1):
        delta = sig[k] - sig[k + 1]
        mid = 0.5 * (sig[k] + sig[k + 1])
        m_k = math.sqrt(2.0 * mid) / (1.0 - mid) ** 1.5 * math.sqrt(delta)
        brownian[k] = brownian[k + 1] + m_k * xi[k - i0].float()

    d = torch.zeros_like(x0)
    for i in range(i0, n_steps):
        sigma, delta = sig[i], sig[i] - sig[i + 1]
        x_i = (1.0 - sigma) * (x0 + brownian[i])
        y_i = x_i + d
        u_src = _velocity(pipe, x_i, sigma, src_embeds, src_pooled, text_ids, image_ids)
        u_tgt = _velocity(pipe, y_i, sigma, tgt_embeds, tgt_pooled, text_ids, image_ids)
        b_src = -2.0 * u_src - x_i / (1.0 - sigma)
        b_tgt = -2.0 * u_tgt - y_i / (1.0 - sigma)
        d = d + (b_tgt - b_src) * delta
    return x0 + d
