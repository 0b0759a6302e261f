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
from coupled_sde.backends.hf._common import execution_device
from coupled_sde.backends.hf._guided import check_rescale, plan_native_cfg, reject_true_cfg, text_rows
from coupled_sde.backends.hf._pipeline import PipelineBackbone
from coupled_sde.backends.registry import register_backbone
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
class StableDiffusionBackbone(PipelineBackbone):
    """A ``StableDiffusionPipeline`` (SD 1.x, 2.x, epsilon- or v-prediction) seen as an :class:`ImageBackbone`.

    Build it from an existing pipeline (``StableDiffusionBackbone(pipe)``; offloading hooks, LoRAs
    and dtypes are kept) or with :meth:`from_pretrained`. ``prediction`` follows the scheduler's
    ``prediction_type``; ``schedule`` is the discrete VP schedule of the scheduler config
    (:class:`~coupled_sde.schedules.DiscreteVP`: float64 ``alphas_cumprod``, DDIM timestep spacing,
    ``final_alpha_cumprod`` 1.0 with ``set_alpha_to_one``, else ``alphas_cumprod[0]``, SD's setting).

    Args:
        pipe: the pipeline whose ``unet``, ``vae``, text encoder and scheduler config are used.
        default_guidance: CFG scale for members whose ``guidance`` is ``None`` (7.5, diffusers' default).
        guidance_rescale: the pipelines' ``guidance_rescale`` (Lin et al. 2024, §3.4): guided outputs
            rescaled towards the conditional output's standard deviation; 0 (default) is plain CFG,
            0.7 the paper's value for zero-terminal-SNR v-prediction models.
    """

    name = "stable-diffusion"
    pipelines = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
    dtype = torch.float16
    denoiser_name = "unet"
    #: The safety checker is not loaded unless passed to :meth:`from_pretrained`.
    load_defaults = {"safety_checker": None, "requires_safety_checker": False}
    #: 50 DDIM timesteps from index 10 (t = 781, img2img's strength 0.8), CFG 7.5; DDIM inversion under
    #: the source at CFG 1. FlowEdit runs in its DDIM form on the same grid.
    defaults = {
        "sync-sde": {"steps": 50, "start": 10, "guidance": 7.5},
        "sdedit": {"steps": 50, "start": 10, "guidance": 7.5},
        "ode-inversion": {"steps": 50, "start": 10, "guidance": 7.5, "source_guidance": 1.0},
        "flowedit": {"steps": 50, "start": 10, "guidance": 7.5},
    }

    init_options = ("default_guidance", "guidance_rescale")

    def __init__(self, pipe: StableDiffusionPipeline, *, default_guidance: float = DEFAULT_GUIDANCE, guidance_rescale: float = 0.0):
        config = pipe.scheduler.config
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type not in _PREDICTIONS:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected 'epsilon' or 'v_prediction'")
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        #: The pipelines' ``guidance_rescale`` (Lin et al. 2024): 0 = plain CFG.
        self.guidance_rescale = check_rescale(guidance_rescale)
        self.prediction: Prediction = _PREDICTIONS[prediction_type]
        self.schedule = DiscreteVP.from_config(config, pipe.scheduler.alphas_cumprod)

    # -- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> StableDiffusionConditions:
        """Encode the members' texts once (one text-encoder batch over the distinct texts).

        Per member: ``prompt`` (``None`` = empty prompt), ``guidance`` = CFG scale (``None`` ->
        ``default_guidance``); a member with ``guidance != 1`` gets an unconditional entry from its
        ``negative_prompt`` or, without one, the empty prompt (as ``StableDiffusionPipeline``).
        ``true_cfg`` does not apply (the native knob already is CFG) and must stay 1.
        """
        reject_true_cfg(
            conditions,
            " to Stable Diffusion, whose guidance already is classifier-free guidance; set guidance (and negative_prompt) instead",
        )
        prompts, guided = plan_native_cfg(conditions, self.default_guidance)
        unique, rows = text_rows(prompts, guided)
        device = execution_device(self.pipe)
        embeds, _ = self.pipe.encode_prompt(unique, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        return StableDiffusionConditions(
            prompt_embeds=embeds.to(self.pipe.unet.dtype),
            prompt_rows=rows.prompt_rows.to(device),
            guidance=torch.tensor(
                [self.default_guidance if c.guidance is None else float(c.guidance) for c in conditions],
                dtype=torch.float32,
                device=device,
            ),
            cfg_members=rows.guided.to(device),
            uncond_rows=rows.uncond_rows[rows.guided].to(device),
            model_device=self.model_device(),
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
        return guided_predict(x, cfg, encoded.guidance[cfg.to(encoded.guidance.device)], call, self.guidance_rescale).to(x.device)

    def _check_state(self, x: torch.Tensor, encoded: StableDiffusionConditions) -> tuple[int, int, int, int, int]:
        """Validate ``x``'s shape against the members and the UNet's channels; return it."""
        self.check_state(x)
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

    def _vae_normalisation(self) -> tuple[float, float]:
        """``(scaling_factor, 0)``: SD's latents are ``z * scaling_factor`` (its VAE has no shift)."""
        return float(self.pipe.vae.config.scaling_factor), 0.0
