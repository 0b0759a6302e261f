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
from coupled_sde.backends.registry import BackboneInfo, register_backbone
from coupled_sde.schedules import DiscreteVP, vp_alphas_cumprod

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

__all__ = ["StableDiffusionBackbone", "StableDiffusionConditions", "alphas_cumprod_float64"]

#: Classifier-free guidance scale used when a member's ``guidance`` is ``None`` (diffusers' default).
DEFAULT_GUIDANCE = 7.5

_PREDICTIONS: dict[str, Prediction] = {"epsilon": "epsilon", "v_prediction": "v"}


def alphas_cumprod_float64(scheduler: Any) -> torch.Tensor:
    """The scheduler's ``alphas_cumprod`` recomputed in float64 from its config
    (:func:`coupled_sde.schedules.vp_alphas_cumprod`; the scheduler's own values for other options)."""
    return vp_alphas_cumprod(scheduler.config, scheduler.alphas_cumprod)


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


@register_backbone
class StableDiffusionBackbone(BackboneInfo):
    """A ``StableDiffusionPipeline`` (SD 1.x, 2.x, epsilon- or v-prediction) seen as an :class:`ImageBackbone`.

    Build it from an existing pipeline (``StableDiffusionBackbone(pipe)``; offloading hooks, LoRAs
    and dtypes are kept) or with :meth:`from_pretrained`. ``prediction`` follows the scheduler's
    ``prediction_type``; ``schedule`` is the discrete VP schedule of the scheduler config
    (:class:`~coupled_sde.schedules.DiscreteVP`: float64 ``alphas_cumprod``, DDIM timestep spacing,
    ``final_alpha_cumprod`` 1.0 with ``set_alpha_to_one``, else ``alphas_cumprod[0]``, SD's setting).

    Args:
        pipe: the pipeline whose ``unet``, ``vae``, text encoder and scheduler config are used.
        default_guidance: CFG scale for members whose ``guidance`` is ``None`` (7.5, diffusers' default).
    """

    name = "stable-diffusion"
    pipelines = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
    dtype = torch.float16
    #: 50 DDIM timesteps from index 10 (t = 781, img2img's strength 0.8), CFG 7.5; DDIM inversion under
    #: the source at CFG 1. FlowEdit runs in its DDIM form on the same grid.
    defaults = {
        "sync-sde": {"steps": 50, "start": 10, "guidance": 7.5},
        "sdedit": {"steps": 50, "start": 10, "guidance": 7.5},
        "ode-inversion": {"steps": 50, "start": 10, "guidance": 7.5, "source_guidance": 1.0},
        "flowedit": {"steps": 50, "start": 10, "guidance": 7.5},
    }

    def __init__(self, pipe: StableDiffusionPipeline, *, default_guidance: float = DEFAULT_GUIDANCE):
        config = pipe.scheduler.config
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type not in _PREDICTIONS:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected 'epsilon' or 'v_prediction'")
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
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

    # -- shapes --------------------------------------------------------------------

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
        self._check_state(x, encoded)
        prompt_rows = encoded.prompt_rows.cpu()
        uncond_row = torch.zeros_like(prompt_rows)
        uncond_row[encoded.cfg_members.cpu()] = encoded.uncond_rows.cpu()

        def call(latents: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            rows = torch.where(negative, uncond_row[member], prompt_rows[member]).to(encoded.prompt_rows.device)
            return self._unet(latents, t, encoded.prompt_embeds[rows], encoded.model_device)

        cfg = encoded.cfg_members.cpu()
        return guided_predict(x, cfg, encoded.guidance[cfg.to(encoded.guidance.device)], call).to(x.device)

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
