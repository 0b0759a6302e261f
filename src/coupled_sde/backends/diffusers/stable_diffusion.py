"""Stable Diffusion 1.x / 2.x as a coupled-SDE backbone, on top of a diffusers ``StableDiffusionPipeline``.

The SDE state is the VAE latent ``(B, 4, H/8, W/8)`` in float32, normalised as ``z *
scaling_factor`` (SD's VAE has no shift). The model is a VP diffusion on a discrete
``alphas_cumprod`` schedule indexed by integer timesteps; :meth:`StableDiffusionBackbone.predict`
returns the classifier-free-guided prediction in the model's own parameterisation (``"epsilon"``
or ``"v"``), evaluating all K members and the unconditional entries they need in **one** UNet
call.

diffusers conventions used (0.42.x, ``pipelines/stable_diffusion/pipeline_stable_diffusion.py``):
``UNet2DConditionModel(x, t, encoder_hidden_states)``; CFG ``uncond + scale (cond - uncond)`` on
the raw model output (also for v-prediction), with the negative prompt or the empty prompt as the
unconditional input; ``scheduler.config.prediction_type`` in ``{"epsilon", "v_prediction"}``;
DDIM's timestep spacings (SD's configs use "leading" with ``steps_offset=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from coupled_sde.backends.base import Condition, Prediction
from coupled_sde.backends.diffusers._common import (
    Generators,
    check_image_size,
    dedupe,
    dtype_kwargs,
    execution_device,
    prompt_text,
    vae_decode,
    vae_encode,
    warn,
)

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

__all__ = ["StableDiffusionBackbone", "StableDiffusionConditions", "alphas_cumprod_float64", "ddim_timesteps"]

#: Classifier-free guidance scale used when a member's ``guidance`` is ``None`` (diffusers' default).
DEFAULT_GUIDANCE = 7.5

_PREDICTIONS: dict[str, Prediction] = {"epsilon": "epsilon", "v_prediction": "v"}


def alphas_cumprod_float64(scheduler: Any) -> torch.Tensor:
    """The scheduler's ``alphas_cumprod`` recomputed in float64 from its config.

    diffusers builds the betas in float32; the original LDM / SD code (and any careful SDE
    arithmetic) uses float64. ``linear``, ``scaled_linear`` and ``squaredcos_cap_v2`` schedules
    and ``trained_betas`` are recomputed; anything else (e.g. ``rescale_betas_zero_snr``) falls back
    to the scheduler's own float32 values, cast.
    """
    config = scheduler.config
    n = int(config.num_train_timesteps)
    schedule = config.get("beta_schedule", "linear")
    if config.get("rescale_betas_zero_snr", False):
        return scheduler.alphas_cumprod.to(torch.float64).cpu()
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config.trained_betas, dtype=torch.float64)
    elif schedule == "linear":
        betas = torch.linspace(config.beta_start, config.beta_end, n, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, n, dtype=torch.float64) ** 2
    elif schedule == "squaredcos_cap_v2":
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        alpha_bar = torch.cos((steps + 0.008) / 1.008 * torch.pi / 2) ** 2
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    else:
        return scheduler.alphas_cumprod.to(torch.float64).cpu()
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(n_steps: int, config: Any) -> torch.Tensor:
    """Integer timesteps, descending, as ``DDIMScheduler.set_timesteps`` spaces them for this config.

    "leading" (the default, and SD 1.x/2.x's): ``arange(N) * (T // N) + steps_offset`` reversed, e.g.
    ``981, 961, ..., 1`` for N = 50; "trailing": ``round(arange(T, 0, -T/N)) - 1``; "linspace":
    ``round(linspace(0, T - 1, N))`` reversed.
    """
    total = int(config.num_train_timesteps)
    if not 1 <= n_steps <= total:
        raise ValueError(f"n_steps must be in [1, {total}], got {n_steps}")
    spacing = config.get("timestep_spacing", "leading")
    if spacing == "leading":
        timesteps = (np.arange(n_steps) * (total // n_steps)).round()[::-1] + int(config.get("steps_offset", 0))
    elif spacing == "trailing":
        timesteps = np.round(np.arange(total, 0, -total / n_steps)) - 1
    elif spacing == "linspace":
        timesteps = np.linspace(0, total - 1, n_steps).round()[::-1]
    else:
        raise ValueError(f"unsupported timestep_spacing {spacing!r}; expected 'leading', 'trailing' or 'linspace'")
    return torch.from_numpy(timesteps.astype(np.int64))


@dataclass(frozen=True)
class StableDiffusionConditions:
    """The K members' conditioning, encoded once per edit by :meth:`StableDiffusionBackbone.encode_conditions`.

    Attributes:
        prompt_embeds: CLIP hidden states of the distinct texts, ``(U, 77, dim)``, UNet dtype.
        prompt_rows: row of each member's prompt, ``(K,)``.
        guidance: each member's CFG scale, float32 ``(K,)``.
        cfg_members: indices of the members with ``guidance != 1`` (they need an unconditional entry).
        uncond_rows: row of each such member's unconditional text (negative prompt or ``""``).
        model_device: where the UNet's inputs go, looked up once per edit (``None``: per call).
    """

    prompt_embeds: torch.Tensor
    prompt_rows: torch.Tensor
    guidance: torch.Tensor
    cfg_members: torch.Tensor
    uncond_rows: torch.Tensor
    model_device: torch.device | None = None

    @property
    def members(self) -> int:
        """K, the number of conditioned members."""
        return int(self.prompt_rows.shape[0])


class StableDiffusionBackbone:
    """A ``StableDiffusionPipeline`` (SD 1.x, 2.x, epsilon- or v-prediction) seen as an :class:`ImageBackbone`.

    Build it from an existing pipeline (``StableDiffusionBackbone(pipe)``; offloading hooks, LoRAs
    and dtypes are kept) or with :meth:`from_pretrained`. ``prediction`` follows the scheduler's
    ``prediction_type``; ``alphas_cumprod`` (float64) and :meth:`timesteps` describe the discrete
    VP schedule, and ``final_alpha_cumprod`` is DDIM's value "after" the last timestep (1.0 with
    ``set_alpha_to_one``, else ``alphas_cumprod[0]``, SD's setting).

    Args:
        pipe: the pipeline whose ``unet``, ``vae``, text encoder and scheduler config are used.
        default_guidance: CFG scale for members whose ``guidance`` is ``None`` (7.5, diffusers' default).
    """

    def __init__(self, pipe: StableDiffusionPipeline, *, default_guidance: float = DEFAULT_GUIDANCE):
        config = pipe.scheduler.config
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type not in _PREDICTIONS:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected 'epsilon' or 'v_prediction'")
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        self.prediction: Prediction = _PREDICTIONS[prediction_type]
        self.alphas_cumprod = alphas_cumprod_float64(pipe.scheduler)
        set_alpha_to_one = config.get("set_alpha_to_one", True)
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(self.alphas_cumprod[0])

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        *,
        torch_dtype: torch.dtype = torch.float16,
        device: str | torch.device | None = None,
        default_guidance: float = DEFAULT_GUIDANCE,
        **pipeline_kwargs: Any,
    ) -> StableDiffusionBackbone:
        """Load a ``StableDiffusionPipeline`` checkpoint (hub id or local folder) and wrap it.

        ``torch_dtype`` is the dtype the models run in (the SDE state stays float32; a float16
        VAE is run in float32 when its config sets ``force_upcast``). The safety checker is not
        loaded unless passed in ``pipeline_kwargs``. ``device`` moves the pipeline there.
        """
        from diffusers import StableDiffusionPipeline

        pipeline_kwargs.setdefault("safety_checker", None)
        pipeline_kwargs.setdefault("requires_safety_checker", False)
        pipe = StableDiffusionPipeline.from_pretrained(model_id_or_path, **dtype_kwargs(torch_dtype), **pipeline_kwargs)
        if device is not None:
            pipe.to(device)
        return cls(pipe, default_guidance=default_guidance)

    # -- shapes and schedule --------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel (8 for SD 1.x/2.x)."""
        return int(self.pipe.vae_scale_factor)

    @property
    def latent_channels(self) -> int:
        """Latent channels (4 for SD 1.x/2.x)."""
        return int(self.pipe.unet.config.in_channels)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The latent shape ``(C, h, w)`` of an ``height x width`` image; ``ValueError`` for sizes the VAE can't take."""
        why = f"the VAE downsamples by {self.vae_scale_factor}"
        check_image_size(height, width, self.vae_scale_factor, why)
        return self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor

    def timesteps(self, n_steps: int) -> torch.Tensor:
        """``n_steps`` integer timesteps (int64), descending, spaced like ``DDIMScheduler`` for this config.

        For SD 1.x/2.x ("leading", ``steps_offset=1``) and N = 50: ``981, 961, ..., 21, 1``. See
        :func:`ddim_timesteps`.
        """
        return ddim_timesteps(n_steps, self.pipe.scheduler.config)

    # -- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> StableDiffusionConditions:
        """Encode the members' texts once (one text-encoder batch over the distinct texts).

        Per member: ``prompt`` (``None`` = empty prompt), ``guidance`` = CFG scale (``None`` ->
        ``default_guidance``); a member with ``guidance != 1`` gets an unconditional entry from its
        ``negative_prompt`` or, without one, the empty prompt (as ``StableDiffusionPipeline``).
        ``true_cfg`` does not apply (the native knob already is CFG) and must stay 1.
        """
        if not conditions:
            raise ValueError("encode_conditions needs at least one Condition")
        for k, c in enumerate(conditions):
            if c.true_cfg != 1:
                raise ValueError(
                    f"member {k}: true_cfg={c.true_cfg} does not apply to Stable Diffusion, whose guidance "
                    "already is classifier-free guidance; set guidance (and negative_prompt) instead"
                )
        guidance = [self.default_guidance if c.guidance is None else float(c.guidance) for c in conditions]
        prompts = [prompt_text(c.prompt) for c in conditions]
        cfg_members = [k for k, g in enumerate(guidance) if g != 1]
        uncond = [prompt_text(conditions[k].negative_prompt) for k in cfg_members]
        for k, c in enumerate(conditions):
            if k not in cfg_members and c.negative_prompt is not None:
                warn(f"member {k}: negative_prompt is ignored with guidance 1 (no classifier-free guidance)")

        unique, row = dedupe(prompts + uncond)
        device = execution_device(self.pipe)
        embeds, _ = self.pipe.encode_prompt(unique, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        return StableDiffusionConditions(
            prompt_embeds=embeds.to(self.pipe.unet.dtype),
            prompt_rows=torch.tensor([row[p] for p in prompts], dtype=torch.long, device=device),
            guidance=torch.tensor(guidance, dtype=torch.float32, device=device),
            cfg_members=torch.tensor(cfg_members, dtype=torch.long, device=device),
            uncond_rows=torch.tensor([row[u] for u in uncond], dtype=torch.long, device=device),
            model_device=execution_device(self.pipe, self.pipe.unet),
        )

    # -- the model call -------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: int | float, encoded: StableDiffusionConditions) -> torch.Tensor:
        """The guided prediction (``epsilon`` or ``v``, see :attr:`prediction`) for all members in one UNet call.

        Args:
            x: latents ``(K, B, 4, h, w)``, float32; member ``k`` is conditioned on ``conditions[k]``.
            t: the integer training timestep (``0 .. num_train_timesteps - 1``), as diffusers' ``t``.
            encoded: the output of :meth:`encode_conditions` for the same K members.

        Returns:
            ``(K, B, 4, h, w)`` float32: ``out_uncond + guidance (out_cond - out_uncond)`` for members
            with ``guidance != 1``, the conditional output for the others.
        """
        members, batch, channels, height, width = self._check_state(x, encoded)
        cfg = encoded.cfg_members
        latents = x.reshape(members * batch, channels, height, width)
        if cfg.numel():
            latents = torch.cat([latents, x[cfg.to(x.device)].reshape(-1, channels, height, width)])
        rows = torch.cat([encoded.prompt_rows, encoded.uncond_rows]).repeat_interleave(batch)
        out = self._unet(latents, t, encoded.prompt_embeds[rows], encoded.model_device)
        cond = out[: members * batch].view(members, batch, channels, height, width)
        if cfg.numel():
            uncond = out[members * batch :].view(-1, batch, channels, height, width)
            scale = encoded.guidance[cfg].to(out.device).view(-1, 1, 1, 1, 1)
            cond = cond.clone()
            cond[cfg.to(out.device)] = uncond + scale * (cond[cfg.to(out.device)] - uncond)
        return cond.to(x.device)

    def _check_state(self, x: torch.Tensor, encoded: StableDiffusionConditions) -> tuple[int, int, int, int, int]:
        """Validate ``x``'s shape against the members and the UNet's channels; return it."""
        if x.ndim != 5:
            raise ValueError(f"x must have shape (K, B, C, h, w), got {tuple(x.shape)}")
        if x.shape[0] != encoded.members:
            raise ValueError(f"x has {x.shape[0]} members but the conditions were encoded for {encoded.members}")
        if x.shape[2] != self.latent_channels:
            raise ValueError(f"latents must have {self.latent_channels} channels, got {x.shape[2]}")
        return tuple(x.shape)

    def _unet(
        self, latents: torch.Tensor, t: int | float, embeds: torch.Tensor, device: torch.device | None = None
    ) -> torch.Tensor:
        """One UNet call on ``(N, 4, h, w)`` latents at timestep ``t``; returns float32."""
        unet = self.pipe.unet
        device, dtype = device or execution_device(self.pipe, unet), unet.dtype
        timestep = torch.full((latents.shape[0],), float(t), device=device)
        out = unet(
            latents.to(device=device, dtype=dtype),
            timestep,
            encoder_hidden_states=embeds.to(device=device, dtype=dtype),
            return_dict=False,
        )[0]
        return out.float()

    # -- images ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] to float32 latents ``(B, 4, H/8, W/8)``: ``z * scaling_factor``.

        A posterior sample; pass one generator per image for per-sample seeds. Sides must be
        multiples of ``vae_scale_factor`` (8), else a ``ValueError`` names the nearest valid size.
        """
        self.latent_shape(images.shape[-2], images.shape[-1])
        vae = self.pipe.vae
        scaling = float(vae.config.scaling_factor)
        latents = vae_encode(vae, images, generator, execution_device(self.pipe, vae), scaling, 0.0)
        return latents.to(images.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, 4, h, w)`` to float32 images ``(B, 3, 8h, 8w)`` clamped to [-1, 1]."""
        vae = self.pipe.vae
        scaling = float(vae.config.scaling_factor)
        return vae_decode(vae, latents, execution_device(self.pipe, vae), scaling, 0.0).to(latents.device)
