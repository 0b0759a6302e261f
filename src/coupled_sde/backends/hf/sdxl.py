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

from typing import TYPE_CHECKING

import torch

from coupled_sde.backends.base import Condition, Prediction, guided_predict
from coupled_sde.backends.hf._common import Generators, execution_device, vae_decode, vae_encode
from coupled_sde.backends.hf._guided import PooledTextConditions, check_rescale, plan_native_cfg, reject_true_cfg, text_rows
from coupled_sde.backends.hf._pipeline import PipelineBackbone
from coupled_sde.backends.registry import register_backbone
from coupled_sde.schedules import DiscreteVP

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLPipeline

__all__ = ["StableDiffusionXLBackbone", "SDXLConditions"]

#: CFG scale for members whose ``guidance`` is ``None``: ``StableDiffusionXLPipeline``'s default.
DEFAULT_GUIDANCE = 5.0

_PREDICTIONS: dict[str, Prediction] = {"epsilon": "epsilon", "v_prediction": "v"}


class SDXLConditions(PooledTextConditions):
    """The K members' conditioning, encoded once per edit by :meth:`StableDiffusionXLBackbone.encode_conditions`:
    ``prompt_embeds`` are the concatenated CLIP hidden states ``(U, 77, 2048)`` (with zero unconditional
    embeddings, the last row is all zeros), ``pooled_prompt_embeds`` the second encoder's projections ``(U, 1280)``."""


@register_backbone
class StableDiffusionXLBackbone(PipelineBackbone):
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
        guidance_rescale: the pipelines' ``guidance_rescale`` (Lin et al. 2024, §3.4): guided outputs
            rescaled towards the conditional output's standard deviation; 0 (default) is plain CFG,
            0.7 the paper's value for zero-terminal-SNR v-prediction models.
    """

    name = "sdxl"
    #: The diffusers pipeline classes this backbone wraps (their components are the same).
    pipelines = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")
    dtype = torch.float16
    denoiser_name = "unet"
    init_options = ("default_guidance", "crops_coords_top_left", "guidance_rescale")
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
        guidance_rescale: float = 0.0,
    ):
        config = pipe.scheduler.config
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type not in _PREDICTIONS:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected 'epsilon' or 'v_prediction'")
        if pipe.unet.config.get("time_cond_proj_dim") is not None:
            raise ValueError("guidance-embedded (LCM-distilled) SDXL UNets are not supported: their CFG is an input, not rows")
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        #: The pipelines' ``guidance_rescale`` (Lin et al. 2024): 0 = plain CFG.
        self.guidance_rescale = check_rescale(guidance_rescale)
        self.crops_coords_top_left = tuple(int(c) for c in crops_coords_top_left)
        self.prediction: Prediction = _PREDICTIONS[prediction_type]
        self.schedule = DiscreteVP.from_config(config, pipe.scheduler.alphas_cumprod)

    # -- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> SDXLConditions:
        """Encode the members' texts once (one batch per text encoder over the distinct texts).

        Per member: ``prompt`` (``None`` = empty prompt), ``guidance`` = CFG scale (``None`` ->
        ``default_guidance``); a member with ``guidance != 1`` gets an unconditional row: its
        ``negative_prompt`` or, without one, zeros (``force_zeros_for_empty_prompt``, SDXL's
        default) or the empty prompt. ``true_cfg`` must stay 1.
        """
        reject_true_cfg(
            conditions, " to SDXL, whose guidance already is classifier-free guidance; set guidance (and negative_prompt) instead"
        )
        zeros = bool(self.pipe.config.get("force_zeros_for_empty_prompt", False))
        prompts, guided = plan_native_cfg(conditions, self.default_guidance, negative=None if zeros else "")
        unique, rows = text_rows(prompts, guided)
        device = execution_device(self.pipe)
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=unique, prompt_2=None, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        if any(u is None for u, _ in guided.values()):  # the zero unconditional embedding gets the last row
            embeds = torch.cat([embeds, torch.zeros_like(embeds[:1])])
            pooled = torch.cat([pooled, torch.zeros_like(pooled[:1])])
        dtype = self.pipe.unet.dtype
        return SDXLConditions(embeds.to(dtype), pooled.to(dtype), rows, self.model_device())

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
        self.check_state(x)
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

        return guided_predict(x, encoded.rows.guided, encoded.rows.scales, call, self.guidance_rescale).to(x.device)

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
