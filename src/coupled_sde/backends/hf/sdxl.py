"""Stable Diffusion XL as a coupled-SDE backbone, on top of a diffusers ``StableDiffusionXLPipeline``.

A VP diffusion (``prediction`` ``"epsilon"`` or ``"v"``, from the scheduler's ``prediction_type``)
on the VAE latent ``(B, 4, H/8, W/8)`` in float32, normalised as ``z * scaling_factor`` (0.13025),
with the discrete ``alphas_cumprod`` schedule indexed by integer timesteps -- the same interface as
:class:`~coupled_sde.backends.hf.StableDiffusionBackbone`, so every VP editing method runs on it.
What SDXL adds is its conditioning, which :meth:`StableDiffusionXLBackbone.predict` assembles per
model row, for all members and their CFG rows in **one** UNet call:

* two text encoders (``CLIPTextModel`` + ``CLIPTextModelWithProjection``): cross attention on their
  concatenated penultimate hidden states, and the second one's *pooled* projection as
  ``added_cond_kwargs["text_embeds"]``;
* six *added time ids* ``(original_size, crops_coords_top_left, target_size)`` as
  ``added_cond_kwargs["time_ids"]`` -- by default ``(H, W, 0, 0, H, W)`` of the image being edited,
  which is what the pipeline uses when generating at that size;
* classifier-free guidance with the negative prompt or, without one, **zero** embeddings when the
  pipeline's ``force_zeros_for_empty_prompt`` is set (SDXL base's setting), as the pipeline does.

diffusers conventions used (0.42.x, ``pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py``):
``unet(x, t, encoder_hidden_states, added_cond_kwargs={"text_embeds", "time_ids"})``; CFG on the raw
model output; timestep spacing from the scheduler config (SDXL: "leading", ``steps_offset=1``).
``guidance_rescale`` is not applied (the pipeline's default is 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from coupled_sde.backends.base import Condition, Prediction, guided_predict
from coupled_sde.backends.hf._common import (
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
from coupled_sde.backends.hf._guided import TextRows
from coupled_sde.backends.registry import BackboneInfo, register_backbone
from coupled_sde.schedules import DiscreteVP

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLPipeline

__all__ = ["StableDiffusionXLBackbone", "SDXLConditions"]

#: CFG scale for members whose ``guidance`` is ``None``: ``StableDiffusionXLPipeline``'s default.
DEFAULT_GUIDANCE = 5.0

_PREDICTIONS: dict[str, Prediction] = {"epsilon": "epsilon", "v_prediction": "v"}


@dataclass(frozen=True)
class SDXLConditions:
    """The K members' conditioning, encoded once per edit by :meth:`StableDiffusionXLBackbone.encode_conditions`.

    Attributes:
        prompt_embeds: concatenated CLIP hidden states of the distinct texts ``(U, 77, 2048)``, UNet
            dtype; with zero unconditional embeddings, the last row is all zeros.
        pooled_prompt_embeds: the second encoder's pooled projections ``(U, 1280)``.
        rows: the members' text rows and their CFG rows (:class:`TextRows`).
        model_device: where the UNet's inputs go, looked up once per edit.
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    rows: TextRows
    model_device: torch.device | None = None

    @property
    def members(self) -> int:
        """K, the number of conditioned members."""
        return self.rows.members


@register_backbone
class StableDiffusionXLBackbone(BackboneInfo):
    """A ``StableDiffusionXLPipeline`` (SDXL base 1.0 or a fine-tune, epsilon or v prediction) seen as a VP image backbone.

    Build it from a pipeline (``StableDiffusionXLBackbone(pipe)``; offloading hooks, LoRAs and
    dtypes are kept) or with :meth:`from_pretrained`. ``schedule`` is the discrete VP schedule of the
    scheduler config (:class:`~coupled_sde.schedules.DiscreteVP`), as for
    :class:`~coupled_sde.backends.hf.StableDiffusionBackbone`: whatever scheduler class the pipeline
    carries (SDXL ships ``EulerDiscreteScheduler``), only its config is read (betas, spacing, offset,
    prediction type). Registry name ``"sdxl"``.

    Args:
        pipe: the pipeline whose UNet, VAE, both text encoders and scheduler config are used.
        default_guidance: CFG scale for members whose ``guidance`` is ``None`` (5.0, the pipeline's).
        crops_coords_top_left: the added-time-id crop coordinates (``(0, 0)`` as the pipeline).
    """

    name = "sdxl"
    #: The diffusers pipeline classes this backbone wraps (their components are the same).
    pipelines = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")
    dtype = torch.float16
    #: As Stable Diffusion's (50 DDIM timesteps from index 10, t = 781; DDIM inversion under the source
    #: at CFG 1) with the pipeline's CFG 5.0 (the members' default guidance). Not tuned for SDXL.
    defaults = {
        "sync-sde": {"steps": 50, "start": 10},
        "sdedit": {"steps": 50, "start": 10},
        "ode-inversion": {"steps": 50, "start": 10, "source_guidance": 1.0},
        "flowedit": {"steps": 50, "start": 10},
    }

    def __init__(
        self,
        pipe: StableDiffusionXLPipeline,
        *,
        default_guidance: float = DEFAULT_GUIDANCE,
        crops_coords_top_left: tuple[int, int] = (0, 0),
    ):
        config = pipe.scheduler.config
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type not in _PREDICTIONS:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected 'epsilon' or 'v_prediction'")
        if pipe.unet.config.get("time_cond_proj_dim") is not None:
            raise ValueError("guidance-embedded (LCM-distilled) SDXL UNets are not supported: their CFG is an input, not rows")
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        self.crops_coords_top_left = tuple(int(c) for c in crops_coords_top_left)
        self.prediction: Prediction = _PREDICTIONS[prediction_type]
        self.schedule = DiscreteVP.from_config(config, pipe.scheduler.alphas_cumprod)

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        *,
        torch_dtype: torch.dtype = torch.float16,
        device: str | torch.device | None = None,
        default_guidance: float = DEFAULT_GUIDANCE,
        **pipeline_kwargs: Any,
    ) -> StableDiffusionXLBackbone:
        """Load a ``StableDiffusionXLPipeline`` checkpoint (hub id or local folder) and wrap it.

        ``torch_dtype`` is the models' dtype (float16 or bfloat16; the SDE state stays float32, and
        a float16 VAE whose config sets ``force_upcast`` -- SDXL's does -- runs in float32).
        ``device`` moves the pipeline there. Other keyword arguments go to
        ``StableDiffusionXLPipeline.from_pretrained`` (``variant="fp16"``, ``vae=...``, ...).
        """
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline.from_pretrained(model_id_or_path, **dtype_kwargs(torch_dtype), **pipeline_kwargs)
        if device is not None:
            pipe.to(device)
        return cls(pipe, default_guidance=default_guidance)

    # -- shapes and schedule --------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel (8)."""
        return int(self.pipe.vae_scale_factor)

    @property
    def latent_channels(self) -> int:
        """Latent channels (4)."""
        return int(self.pipe.unet.config.in_channels)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The latent shape ``(C, h, w)`` of an ``height x width`` image; ``ValueError`` for sizes the VAE can't take."""
        check_image_size(height, width, self.vae_scale_factor, f"the VAE downsamples by {self.vae_scale_factor}")
        return self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor

    # -- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> SDXLConditions:
        """Encode the members' texts once (one batch per text encoder over the distinct texts).

        Per member: ``prompt`` (``None`` = empty prompt), ``guidance`` = CFG scale (``None`` ->
        ``default_guidance``); a member with ``guidance != 1`` gets an unconditional row: its
        ``negative_prompt`` or, without one, zeros (``force_zeros_for_empty_prompt``, SDXL's
        default) or the empty prompt. ``true_cfg`` must stay 1.
        """
        if not conditions:
            raise ValueError("encode_conditions needs at least one Condition")
        for k, c in enumerate(conditions):
            if c.true_cfg != 1:
                raise ValueError(
                    f"member {k}: true_cfg={c.true_cfg} does not apply to SDXL, whose guidance already is "
                    "classifier-free guidance; set guidance (and negative_prompt) instead"
                )
        scales = [self.default_guidance if c.guidance is None else float(c.guidance) for c in conditions]
        prompts = [prompt_text(c.prompt) for c in conditions]
        guided = [k for k, g in enumerate(scales) if g != 1]
        zeros = bool(self.pipe.config.get("force_zeros_for_empty_prompt", False))
        uncond: list[str | None] = [
            None if conditions[k].negative_prompt is None and zeros else prompt_text(conditions[k].negative_prompt)
            for k in guided
        ]
        for k, c in enumerate(conditions):
            if k not in guided and c.negative_prompt is not None:
                warn(f"member {k}: negative_prompt is ignored with guidance 1 (no classifier-free guidance)")

        unique, row = dedupe(prompts + [u for u in uncond if u is not None])
        device = execution_device(self.pipe)
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=unique, prompt_2=None, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        if any(u is None for u in uncond):  # the zero unconditional embedding gets the last row
            row[None] = embeds.shape[0]
            embeds = torch.cat([embeds, torch.zeros_like(embeds[:1])])
            pooled = torch.cat([pooled, torch.zeros_like(pooled[:1])])
        dtype = self.pipe.unet.dtype
        rows = TextRows.build([row[p] for p in prompts], {k: (row[u], scales[k]) for k, u in zip(guided, uncond, strict=True)})
        return SDXLConditions(embeds.to(dtype), pooled.to(dtype), rows, execution_device(self.pipe, self.pipe.unet))

    # -- the model call -------------------------------------------------------------------------

    def add_time_ids(self, height: int, width: int) -> tuple[int, ...]:
        """The six added time ids for an ``height x width`` image: ``(H, W, *crops_coords_top_left, H, W)``."""
        return (height, width, *self.crops_coords_top_left, height, width)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: int | float, encoded: SDXLConditions) -> torch.Tensor:
        """The guided prediction (``epsilon`` or ``v``) for all members in one UNet call.

        Args:
            x: latents ``(K, B, 4, h, w)``, float32.
            t: the integer training timestep, as diffusers' ``t``.
            encoded: the output of :meth:`encode_conditions` for the same K members.

        Returns:
            ``(K, B, 4, h, w)`` float32: ``out_uncond + guidance (out_cond - out_uncond)`` for members
            with ``guidance != 1``, the conditional output for the others.
        """
        if x.ndim != 5:
            raise ValueError(f"x must have shape (K, B, C, h, w), got {tuple(x.shape)}")
        if x.shape[2] != self.latent_channels:
            raise ValueError(f"latents must have {self.latent_channels} channels, got {x.shape[2]}")
        encoded.rows.check(x)
        height, width = x.shape[3], x.shape[4]
        unet = self.pipe.unet
        device, dtype = encoded.model_device or execution_device(self.pipe, unet), unet.dtype
        scale = self.vae_scale_factor
        time_ids = torch.tensor([self.add_time_ids(height * scale, width * scale)], dtype=dtype, device=device)

        def call(latents: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            rows = encoded.rows.rows(member, negative).to(encoded.prompt_embeds.device)
            n = latents.shape[0]
            out = unet(
                latents.to(device=device, dtype=dtype),
                torch.full((n,), float(t), device=device),
                encoder_hidden_states=encoded.prompt_embeds[rows].to(device),
                added_cond_kwargs={
                    "text_embeds": encoded.pooled_prompt_embeds[rows].to(device),
                    "time_ids": time_ids.repeat(n, 1),
                },
                return_dict=False,
            )[0]
            return out.float()

        return guided_predict(x, encoded.rows.guided, encoded.rows.scales, call).to(x.device)

    # -- images ---------------------------------------------------------------------------------

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """``(mean, std / scaling_factor)``: the state is ``(z - mean) / (std / scaling_factor)``.

        SDXL's VAE has no ``latents_mean`` / ``latents_std`` (mean 0, std 1: ``z * scaling_factor``);
        VAEs that set both (as some SDXL fine-tunes do) are normalised per channel, as the pipeline
        de-normalises them before decoding.
        """
        config = self.pipe.vae.config
        scaling = float(config.scaling_factor)
        mean, std = config.get("latents_mean"), config.get("latents_std")
        if mean is None or std is None:
            return 0.0, 1.0 / scaling
        view = (1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(view)
        return mean_t, torch.tensor(std, dtype=torch.float32, device=device).view(view) / scaling

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] to float32 latents ``(B, 4, H/8, W/8)``: a posterior sample times
        ``scaling_factor`` (per-channel normalised when the VAE sets ``latents_mean`` / ``latents_std``).
        One generator per image gives per-sample seeds; sides must be multiples of 8."""
        self.latent_shape(images.shape[-2], images.shape[-1])
        vae = self.pipe.vae
        z = vae_encode(vae, images, generator, execution_device(self.pipe, vae), 1.0, 0.0)
        mean, scale = self._normalisation(z.device)
        return ((z - mean) / scale).to(images.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, 4, h, w)`` to float32 images ``(B, 3, 8h, 8w)`` clamped to [-1, 1]."""
        vae = self.pipe.vae
        mean, scale = self._normalisation(latents.device)
        z = latents.float() * scale + mean
        return vae_decode(vae, z, execution_device(self.pipe, vae), 1.0, 0.0).to(latents.device)
