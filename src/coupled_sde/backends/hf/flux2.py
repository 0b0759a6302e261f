"""FLUX.2 (dev and Klein) as coupled-SDE backbones, on top of diffusers' ``Flux2Pipeline`` / ``Flux2KleinPipeline``.

Both share the image side: an ``AutoencoderKLFlux2`` whose latent ``z`` (32 channels for the real
models) is *patchified* 2x2 into ``4 C`` channels at ``H/16 x W/16`` and normalised per channel by
the VAE's batch-norm running statistics, ``(patchify(z) - mean) / sqrt(var + eps)``. That
normalised, patchified latent ``(B, 4C, H/16, W/16)`` in float32 is the SDE state (what the
pipelines denoise); the transformer sees it flattened to tokens ``(B, h w, 4C)`` with 4-D position
ids ``(0, row, column, 0)``. Rectified flow (``prediction = "flow"``, ``u`` estimates
``eps - x0``); the transformer takes ``timestep = sigma`` (it multiplies by 1000 inside).

* :class:`Flux2Backbone` -- FLUX.2 dev: a Mistral-3 text encoder, a guidance-distilled transformer
  with a per-sample guidance embedding (``guidance``, default 4.0 as the pipeline), optional true
  CFG on top (``true_cfg`` with a ``negative_prompt``), as :class:`~coupled_sde.backends.hf.FluxBackbone`.
* :class:`Flux2KleinBackbone` -- FLUX.2 Klein: a Qwen3 text encoder, no guidance embedding. The base
  Klein models use classifier-free guidance as their native knob (``guidance`` = CFG scale against
  the ``negative_prompt`` or the empty prompt, default 4.0); the *distilled* few-step ones
  (``is_distilled`` in the pipeline config) take no guidance at all.

Schedule (both pipelines): ``s = linspace(1, 1/N, N)`` shifted with FLUX.2's *empirical* ``mu``,
which depends on the image token count **and the step count** (``compute_empirical_mu`` of
BFL's ``flux2/sampling.py``): ``sigma = e^mu / (e^mu + 1/s - 1)``, then 0 (:func:`flux2_sigmas`).

Every member and every CFG row goes through the transformer in **one** call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from coupled_sde.backends.base import Condition, Prediction, guided_predict
from coupled_sde.backends.hf._common import Generators, execution_device, vae_encode, vae_precision, warn
from coupled_sde.backends.hf._guided import TextRows, plan_native_cfg, plan_true_cfg, reject_true_cfg, text_rows
from coupled_sde.backends.hf._pipeline import PipelineBackbone
from coupled_sde.backends.hf.flux import _EXOTIC_SCHEDULER_OPTIONS
from coupled_sde.backends.registry import register_backbone
from coupled_sde.schedules import RectifiedFlow

if TYPE_CHECKING:
    from diffusers import Flux2KleinPipeline, Flux2Pipeline

__all__ = [
    "Flux2Backbone",
    "Flux2Conditions",
    "Flux2KleinBackbone",
    "empirical_mu",
    "flux2_sigmas",
    "patchify",
    "unpatchify",
]

#: Defaults of the pipelines' ``guidance_scale`` (embedded guidance for dev, CFG for base Klein).
DEFAULT_GUIDANCE = 4.0


def empirical_mu(image_seq_len: int, n_steps: int) -> float:
    """FLUX.2's schedule shift ``mu``: linear in the step count between fits at 10 and 200 steps, each
    linear in the token count (BFL's ``compute_empirical_mu``, the same constants as diffusers'
    copy); beyond 4300 tokens only the 200-step fit is used."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    m_200 = a2 * image_seq_len + b2
    if image_seq_len > 4300:
        return float(m_200)
    m_10 = a1 * image_seq_len + b1
    slope = (m_200 - m_10) / 190.0
    return float(slope * n_steps + m_200 - 200.0 * slope)


def flux2_sigmas(n_steps: int, image_seq_len: int, scheduler: Any) -> torch.Tensor:
    """The ``n_steps + 1`` float64 noise levels the FLUX.2 pipelines use, ending with 0.

    ``s = linspace(1, 1/N, N)``, ``mu = empirical_mu(image_seq_len, N)``; with dynamic shifting
    (FLUX.2's config) ``sigma = e^mu / (e^mu + 1/s - 1)`` ("linear" ``time_shift_type``:
    ``mu / (mu + 1/s - 1)``), else the static shift of the config. Options beyond shifting are
    delegated to a fresh copy of the scheduler (``use_flow_sigmas`` as the pipelines: no ``s``).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    config = scheduler.config
    s = np.linspace(1.0, 1.0 / n_steps, n_steps)
    mu = empirical_mu(image_seq_len, n_steps)
    if any(config.get(option) for option in _EXOTIC_SCHEDULER_OPTIONS):
        fresh = type(scheduler).from_config(config)
        fresh.set_timesteps(num_inference_steps=n_steps, sigmas=None if config.get("use_flow_sigmas") else s.tolist(), mu=mu)
        return fresh.sigmas.to(torch.float64).cpu()
    if config.get("use_dynamic_shifting", False):
        if config.get("time_shift_type", "exponential") == "linear":
            sigmas = mu / (mu + (1.0 / s - 1.0))
        else:
            sigmas = math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0))
    else:
        shift = float(config.get("shift", 1.0))
        sigmas = shift * s / (1.0 + (shift - 1.0) * s)
    return torch.from_numpy(np.append(sigmas, 0.0)).to(torch.float64)


def patchify(z: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` to ``(B, 4C, H/2, W/2)``, channel-major within a patch (``Flux2Pipeline._patchify_latents``)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b, c4, h, w = x.shape
    return x.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


def _image_ids(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Position ids ``(h w, 4)`` of the image tokens: ``(0, row, column, 0)``, shared by the batch."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    zeros = torch.zeros_like(rows)
    return torch.stack([zeros, rows, cols, zeros], dim=-1).reshape(-1, 4).to(device)


def _text_ids(length: int, device: torch.device) -> torch.Tensor:
    """Position ids ``(L, 4)`` of the text tokens: ``(0, 0, 0, l)``."""
    ids = torch.zeros(length, 4, dtype=torch.long)
    ids[:, 3] = torch.arange(length)
    return ids.to(device)


@dataclass(frozen=True)
class Flux2Conditions:
    """The K members' conditioning, encoded once per edit by ``encode_conditions``.

    Attributes:
        prompt_embeds: stacked text-encoder hidden states of the distinct texts, ``(U, L, 3 dim)``.
        rows: the members' text rows and their CFG rows (:class:`TextRows`).
        guidance: each member's guidance-embedding value, float32 ``(K,)`` (``None`` without one).
        model_device: where the transformer's inputs go, looked up once per edit.
    """

    prompt_embeds: torch.Tensor
    rows: TextRows
    guidance: torch.Tensor | None = None
    model_device: torch.device | None = None

    @property
    def members(self) -> int:
        """K, the number of conditioned members."""
        return self.rows.members


class _Flux2Base(PipelineBackbone):
    """What FLUX.2 dev and Klein share: latents, VAE, schedule, prompts and the transformer call."""

    prediction: Prediction = "flow"
    dtype = torch.bfloat16
    #: The VAE latent is patchified 2x2 into the state: image sides are multiples of 8 x 2.
    patch_size = 2
    size_reason = " and FLUX.2 patchifies 2x2 latent pixels"
    init_options = ("default_guidance", "max_sequence_length", "text_encoder_out_layers")

    def __init__(
        self,
        pipe: Any,
        *,
        default_guidance: float = DEFAULT_GUIDANCE,
        max_sequence_length: int = 512,
        text_encoder_out_layers: tuple[int, ...] | None = None,
    ):
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        self.max_sequence_length = int(max_sequence_length)
        self.text_encoder_out_layers = None if text_encoder_out_layers is None else tuple(text_encoder_out_layers)
        #: The pipelines' schedule; its shift depends on the step count too, so the grid is computed
        #: by :func:`flux2_sigmas` (the state is already patchified: one token per state pixel).
        self.schedule = RectifiedFlow.from_config(
            pipe.scheduler.config, patch=1, sigmas_fn=lambda n, tokens: flux2_sigmas(n, tokens, pipe.scheduler)
        )

    # -- shapes and schedule --------------------------------------------------------------------

    @property
    def state_downsampling(self) -> int:
        """Image pixels per state pixel (16): the state is the 2x2-patchified latent."""
        return self.image_multiple

    # -- conditioning ---------------------------------------------------------------------------

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """One text-encoder batch over ``texts``: ``(U, L, 3 dim)`` in the transformer's dtype."""
        kwargs = {} if self.text_encoder_out_layers is None else {"text_encoder_out_layers": self.text_encoder_out_layers}
        embeds, _ = self.pipe.encode_prompt(
            prompt=texts, device=execution_device(self.pipe), max_sequence_length=self.max_sequence_length, **kwargs
        )
        return embeds.to(self.pipe.transformer.dtype)

    # -- the model call -------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: float, encoded: Flux2Conditions) -> torch.Tensor:
        """The (guided) flow prediction ``u`` for all members, in one transformer call.

        Args:
            x: normalised patchified latents ``(K, B, 4C, h, w)``, float32.
            t: the noise level ``sigma`` in [0, 1].
            encoded: the output of ``encode_conditions`` for the same K members.

        Returns:
            ``(K, B, 4C, h, w)`` float32.
        """
        self.check_state(x)
        if x.shape[2] != self.latent_channels:
            raise ValueError(f"FLUX.2 latents must have {self.latent_channels} channels, got {x.shape[2]}")
        encoded.rows.check(x)
        channels, height, width = x.shape[2:]
        transformer = self.pipe.transformer
        device, dtype = encoded.model_device or execution_device(self.pipe, transformer), transformer.dtype
        text_ids = _text_ids(encoded.prompt_embeds.shape[1], device)
        image_ids = _image_ids(height, width, device)

        def call(latents: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            n = latents.shape[0]
            rows = encoded.rows.rows(member, negative).to(encoded.prompt_embeds.device)
            guidance = None if encoded.guidance is None else encoded.guidance.to(device)[member.to(device)]
            tokens = latents.reshape(n, channels, height * width).permute(0, 2, 1)
            out = transformer(
                hidden_states=tokens.to(device=device, dtype=dtype),
                timestep=torch.full((n,), float(t), device=device, dtype=dtype),
                guidance=guidance,
                encoder_hidden_states=encoded.prompt_embeds[rows].to(device),
                txt_ids=text_ids,
                img_ids=image_ids,
                return_dict=False,
            )[0]
            return out[:, : height * width].float().permute(0, 2, 1).reshape(n, channels, height, width)

        return guided_predict(x, encoded.rows.guided, encoded.rows.scales, call).to(x.device)

    # -- images ---------------------------------------------------------------------------------

    def _batch_norm(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's per-channel normalisation ``(mean, std)`` as float32 ``(1, 4C, 1, 1)``."""
        vae = self.pipe.vae
        mean = vae.bn.running_mean.float().view(1, -1, 1, 1).to(device)
        std = torch.sqrt(vae.bn.running_var.float().view(1, -1, 1, 1) + float(vae.config.batch_norm_eps)).to(device)
        return mean, std

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] to the normalised patchified state ``(B, 4C, H/16, W/16)``, float32.

        A posterior *sample* of the VAE (as the sync-SDE reference on FLUX; the FLUX.2 pipelines'
        image conditioning uses the posterior mean), patchified and batch-norm normalised. One
        generator per image gives per-sample seeds. Sides must be multiples of 16.
        """
        self.latent_shape(images.shape[-2], images.shape[-1])
        vae = self.pipe.vae
        z = vae_encode(vae, images, generator, execution_device(self.pipe, vae), 1.0, 0.0)
        mean, std = self._batch_norm(z.device)
        return ((patchify(z) - mean) / std).to(images.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The normalised patchified state ``(B, 4C, h, w)`` to float32 images ``(B, 3, 16h, 16w)`` in [-1, 1]."""
        vae = self.pipe.vae
        device = execution_device(self.pipe, vae)
        mean, std = self._batch_norm(latents.device)
        z = unpatchify(latents.float() * std + mean)
        with vae_precision(vae):
            images = vae.decode(z.to(device=device, dtype=vae.dtype), return_dict=False)[0]
        return images.float().clamp(-1.0, 1.0).to(latents.device)


@register_backbone
class Flux2Backbone(_Flux2Base):
    """A ``Flux2Pipeline`` (FLUX.2 dev) seen as an image backbone.

    Per member: ``guidance`` is the guidance-embedding value (``None`` -> ``default_guidance``, 4.0
    as the pipeline); true CFG (``u_neg + true_cfg (u_pos - u_neg)``) when ``true_cfg > 1`` and a
    ``negative_prompt`` is given, its rows in the same transformer call.

    Args:
        pipe: the ``Flux2Pipeline``; offloading hooks, LoRAs and dtypes are kept.
        default_guidance: guidance-embedding value for members whose ``guidance`` is ``None``.
        max_sequence_length: text length (the pipeline's 512).
        text_encoder_out_layers: the hidden-state layers stacked into the prompt embedding
            (``None``: the pipeline's (10, 20, 30)).
    """

    name = "flux2"
    #: The diffusers pipeline classes this backbone wraps.
    pipelines = ("Flux2Pipeline",)
    #: The FLUX.1 reference grid (28 steps from index 4) with the pipeline's guidance embedding (4.0,
    #: the members' default): a starting point, no setting is published for FLUX.2 dev.
    defaults = {method: {"steps": 28, "start": 4} for method in ("sync-sde", "sdedit", "ode-inversion", "flowedit")}

    def __init__(self, pipe: Flux2Pipeline, **kwargs: Any):
        super().__init__(pipe, **kwargs)

    @property
    def has_guidance_embedding(self) -> bool:
        """Whether the transformer takes a guidance value (FLUX.2 dev does)."""
        return bool(self.pipe.transformer.config.guidance_embeds)

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> Flux2Conditions:
        """Encode the members' texts once (one text-encoder batch over the distinct texts)."""
        prompts, guided = plan_true_cfg(conditions)
        if not self.has_guidance_embedding and any(c.guidance is not None for c in conditions):
            warn("this FLUX.2 transformer has no guidance embedding; the members' guidance is ignored")
        unique, rows = text_rows(prompts, guided)
        device = execution_device(self.pipe)
        guidance = None
        if self.has_guidance_embedding:
            values = [self.default_guidance if c.guidance is None else float(c.guidance) for c in conditions]
            guidance = torch.tensor(values, dtype=torch.float32, device=device)
        return Flux2Conditions(self._encode_texts(unique), rows, guidance, self.model_device())


@register_backbone
class Flux2KleinBackbone(_Flux2Base):
    """A ``Flux2KleinPipeline`` (FLUX.2 Klein, base or distilled) seen as an image backbone.

    Base Klein: ``guidance`` is the CFG scale (``None`` -> ``default_guidance``, 4.0 as the
    pipeline; CFG when ``> 1``, as the pipeline) against the ``negative_prompt`` or the empty prompt.
    Distilled Klein (``pipe.config.is_distilled``, 4 steps): no guidance; a ``guidance`` or
    ``negative_prompt`` is ignored with a warning.

    Args:
        pipe: the ``Flux2KleinPipeline``; offloading hooks, LoRAs and dtypes are kept.
        default_guidance: CFG scale for members whose ``guidance`` is ``None`` (base models only).
        max_sequence_length: text length (the pipeline's 512).
        text_encoder_out_layers: the hidden-state layers stacked into the prompt embedding
            (``None``: the pipeline's (9, 18, 27)).
    """

    name = "flux2-klein"
    #: The diffusers pipeline classes this backbone wraps (their components are the same).
    pipelines = ("Flux2KleinPipeline", "Flux2KleinInpaintPipeline")
    #: The distilled Klein checkpoints sample in 4 steps (the pipeline's documented setting): every
    #: method on that grid from index 1. Base (non-distilled) models get 50 steps (set in ``__init__``).
    defaults = {method: {"steps": 4, "start": 1} for method in ("sync-sde", "sdedit", "ode-inversion", "flowedit")}

    def __init__(self, pipe: Flux2KleinPipeline, **kwargs: Any):
        super().__init__(pipe, **kwargs)
        if not self.is_distilled:
            self.defaults = {method: {"steps": 50, "start": 1} for method in type(self).defaults}

    @property
    def is_distilled(self) -> bool:
        """Whether this is a step-distilled (few-step, guidance-free) Klein checkpoint."""
        return bool(self.pipe.config.get("is_distilled", False))

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> Flux2Conditions:
        """Encode the members' texts once (one text-encoder batch over the distinct texts)."""
        reject_true_cfg(
            conditions,
            " to FLUX.2 Klein: its guidance already is classifier-free guidance (base models) or absent (distilled); "
            "set guidance and negative_prompt",
        )
        if self.is_distilled:
            if any(c.guidance is not None and c.guidance != 1 for c in conditions):
                warn("this FLUX.2 Klein model is step-distilled: it takes no guidance; the members' guidance is ignored")
            if any(c.negative_prompt is not None for c in conditions):
                warn("this FLUX.2 Klein model is step-distilled: negative prompts are ignored")
        prompts, guided = plan_native_cfg(conditions, self.default_guidance, above_one=True, guidance_free=self.is_distilled)
        unique, rows = text_rows(prompts, guided)
        return Flux2Conditions(self._encode_texts(unique), rows, None, self.model_device())
