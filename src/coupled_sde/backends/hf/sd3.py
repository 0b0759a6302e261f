"""Stable Diffusion 3 / 3.5 as a coupled-SDE backbone, on top of a diffusers ``StableDiffusion3Pipeline``.

Rectified flow (``prediction = "flow"``) on the normalised VAE latent ``(B, 16, H/8, W/8)`` in
float32 (``(z - shift_factor) * scaling_factor``, what the pipeline denoises). SD3 is *not*
guidance-distilled: its native knob is true classifier-free guidance, so every member with a
guidance scale ``!= 1`` gets an unconditional row (its ``negative_prompt``, or the empty prompt as
the pipeline), and all members and those rows go through the transformer in **one** call.

diffusers conventions used (0.42.x, ``pipelines/stable_diffusion_3/pipeline_stable_diffusion_3.py``):

* ``SD3Transformer2DModel(hidden_states (N, 16, h, w), timestep = 1000 sigma, encoder_hidden_states,
  pooled_projections)`` -- unlike FLUX the timestep is *not* divided by 1000; patchifying (2x2) is
  inside the model, so image sides must be multiples of ``2 * vae_scale_factor`` = 16;
* prompts: two CLIP encoders (penultimate hidden states, concatenated, zero-padded to the T5 width)
  followed by T5 tokens along the sequence; pooled = both CLIP projections concatenated
  (``pipe.encode_prompt``). ``text_encoder_3=None`` (dropping T5 to save memory) is supported by the
  pipeline and therefore here;
* schedule: with ``sigmas=None`` the pipeline lets the scheduler space ``N`` points from its
  ``sigma_max`` to its ``sigma_min`` (the *shifted* training range) and shift them again --
  ``s = linspace(1, shift(1/1000), N)``, ``sigma = shift s / (1 + (shift - 1) s)``, static shift 3.0
  for SD3 medium and SD3.5 -- then appends 0 (:func:`sd3_sigmas`).

Per-method defaults (:attr:`StableDiffusion3Backbone.defaults`, registry name ``"sd3"``): FlowEdit's
published SD3 settings (Kulikov et al., ICCV 2025): 50 steps, ``n_max = 33``, source / target CFG
3.5 / 13.5. The other methods get the FLUX.1 reference grid (28 steps from index 4, sigma = 0.95 on
this schedule) and the pipeline's CFG: an untuned starting point, no published setting exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
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
from coupled_sde.backends.hf.flux import _EXOTIC_SCHEDULER_OPTIONS
from coupled_sde.backends.registry import BackboneInfo, register_backbone
from coupled_sde.schedules import RectifiedFlow, calculate_shift

if TYPE_CHECKING:
    from diffusers import StableDiffusion3Pipeline

__all__ = ["StableDiffusion3Backbone", "SD3Conditions", "sd3_sigmas"]

#: CFG scale for members whose ``guidance`` is ``None``: ``StableDiffusion3Pipeline``'s default.
DEFAULT_GUIDANCE = 7.0


def sd3_sigmas(n_steps: int, image_seq_len: int, scheduler: Any) -> torch.Tensor:
    """The ``n_steps + 1`` float64 noise levels ``StableDiffusion3Pipeline`` uses, ending with 0.

    Static shift (SD3, SD3.5): ``s = linspace(1, s_min, N)`` with ``s_min = shift(1 / T)`` the
    scheduler's own ``sigma_min``, then ``sigma = shift(s) = shift s / (1 + (shift - 1) s)``. A
    dynamic-shifting config uses ``s_min = 1 / T`` and ``sigma = e^mu / (e^mu + 1/s - 1)`` with
    ``mu = calculate_shift(image_seq_len, ...)`` (SD3's pipeline default ``max_shift`` is 1.16).
    Options beyond shifting (Karras sigmas, ``shift_terminal``, ...) are delegated to a fresh copy
    of the scheduler. ``image_seq_len`` is the number of 2x2 patches.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    config = scheduler.config
    total = int(config.num_train_timesteps)
    dynamic = bool(config.get("use_dynamic_shifting", False))
    mu = None
    if dynamic:
        mu = calculate_shift(
            image_seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.16),
        )
    if any(config.get(option) for option in _EXOTIC_SCHEDULER_OPTIONS):
        fresh = type(scheduler).from_config(config)
        fresh.set_timesteps(num_inference_steps=n_steps, mu=mu)
        return fresh.sigmas.to(torch.float64).cpu()
    shift = float(config.get("shift", 1.0))

    def shifted(s: np.ndarray | float) -> np.ndarray | float:
        return shift * s / (1.0 + (shift - 1.0) * s)

    s_min = 1.0 / total if dynamic else shifted(1.0 / total)
    s = np.linspace(1.0, s_min, n_steps)
    if dynamic:
        if config.get("time_shift_type", "exponential") == "linear":
            sigmas = mu / (mu + (1.0 / s - 1.0))
        else:
            sigmas = np.exp(mu) / (np.exp(mu) + (1.0 / s - 1.0))
    else:
        sigmas = shifted(s)
    return torch.from_numpy(np.append(sigmas, 0.0)).to(torch.float64)


@dataclass(frozen=True)
class SD3Conditions:
    """The K members' conditioning, encoded once per edit by :meth:`StableDiffusion3Backbone.encode_conditions`.

    Attributes:
        prompt_embeds: joint CLIP + T5 embeddings of the distinct texts, ``(U, 77 + T5 length, dim)``.
        pooled_prompt_embeds: concatenated CLIP projections, ``(U, pooled_dim)``.
        rows: the members' text rows and their CFG rows (:class:`TextRows`).
        model_device: where the transformer's inputs go, looked up once per edit.
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
class StableDiffusion3Backbone(BackboneInfo):
    """A ``StableDiffusion3Pipeline`` (SD3 medium, SD3.5 medium / large / large-turbo) seen as an image backbone.

    Build it from a pipeline (``StableDiffusion3Backbone(pipe)`` keeps offloading hooks, LoRAs and
    dtypes) or with :meth:`from_pretrained`. Stateless: :meth:`encode_conditions` returns what
    :meth:`predict` takes.

    Args:
        pipe: the pipeline whose transformer, VAE, three text encoders and scheduler config are used.
        default_guidance: CFG scale for members whose ``guidance`` is ``None`` (7.0, the pipeline's
            default; FlowEdit uses 3.5 / 13.5, see :attr:`defaults`).
        max_sequence_length: T5 prompt length (the pipeline's 256).
    """

    name = "sd3"
    #: The diffusers pipeline classes this backbone wraps (their components are the same).
    pipelines = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline")
    dtype = torch.bfloat16
    patch_size = 2
    #: FlowEdit's published SD3 setting (n_max = 33 of 50 steps: start = 50 - 33 = 17); the FLUX.1
    #: reference grid for the others (not tuned for SD3).
    defaults = {
        "flowedit": {"steps": 50, "start": 17, "guidance": 13.5, "source_guidance": 3.5},
        "sync-sde": {"steps": 28, "start": 4},
        "sdedit": {"steps": 28, "start": 4},
        "ode-inversion": {"steps": 28, "start": 4},
    }
    prediction: Prediction = "flow"

    def __init__(
        self, pipe: StableDiffusion3Pipeline, *, default_guidance: float = DEFAULT_GUIDANCE, max_sequence_length: int = 256
    ):
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        self.max_sequence_length = int(max_sequence_length)
        #: The pipeline's (double-shifted) schedule, over the transformer's 2x2 patches.
        self.schedule = RectifiedFlow.from_config(
            pipe.scheduler.config, patch=2, sigmas_fn=lambda n, tokens: sd3_sigmas(n, tokens, pipe.scheduler)
        )

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        *,
        torch_dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device | None = None,
        default_guidance: float = DEFAULT_GUIDANCE,
        max_sequence_length: int = 256,
        **pipeline_kwargs: Any,
    ) -> StableDiffusion3Backbone:
        """Load a ``StableDiffusion3Pipeline`` checkpoint (hub id or local folder) and wrap it.

        ``torch_dtype`` is the models' dtype (bf16; the SDE state stays float32). ``device`` moves
        the pipeline there (or leave it ``None`` and call ``backbone.pipe.enable_model_cpu_offload()``).
        Pass ``text_encoder_3=None`` to drop T5 (about 9.5 GB in bf16) at some cost in prompt
        following. Other keyword arguments go to ``StableDiffusion3Pipeline.from_pretrained``.
        """
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline.from_pretrained(model_id_or_path, **dtype_kwargs(torch_dtype), **pipeline_kwargs)
        if device is not None:
            pipe.to(device)
        return cls(pipe, default_guidance=default_guidance, max_sequence_length=max_sequence_length)

    # -- shapes and schedule --------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel (8)."""
        return int(self.pipe.vae_scale_factor)

    @property
    def latent_channels(self) -> int:
        """Latent channels (16)."""
        return int(self.pipe.transformer.config.in_channels)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The latent shape ``(C, h, w)`` of an ``height x width`` image; ``ValueError`` for sizes SD3 can't take."""
        why = f"the VAE downsamples by {self.vae_scale_factor} and the transformer patchifies {self.patch_size}x{self.patch_size}"
        check_image_size(height, width, self.vae_scale_factor * self.patch_size, why)
        return self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor

    # -- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> SD3Conditions:
        """Encode the members' texts once (one batch per text encoder over the distinct texts).

        Per member: ``prompt`` (``None`` = empty prompt), ``guidance`` = CFG scale (``None`` ->
        ``default_guidance``); a member with ``guidance != 1`` gets an unconditional row from its
        ``negative_prompt`` or the empty prompt. ``true_cfg`` must stay 1 (the native knob already
        is CFG).
        """
        if not conditions:
            raise ValueError("encode_conditions needs at least one Condition")
        for k, c in enumerate(conditions):
            if c.true_cfg != 1:
                raise ValueError(
                    f"member {k}: true_cfg={c.true_cfg} does not apply to SD3, whose guidance already is "
                    "classifier-free guidance; set guidance (and negative_prompt) instead"
                )
        scales = [self.default_guidance if c.guidance is None else float(c.guidance) for c in conditions]
        prompts = [prompt_text(c.prompt) for c in conditions]
        guided = [k for k, g in enumerate(scales) if g != 1]
        uncond = [prompt_text(conditions[k].negative_prompt) for k in guided]
        for k, c in enumerate(conditions):
            if k not in guided and c.negative_prompt is not None:
                warn(f"member {k}: negative_prompt is ignored with guidance 1 (no classifier-free guidance)")

        unique, row = dedupe(prompts + uncond)
        device = execution_device(self.pipe)
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=unique,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        dtype = self.pipe.transformer.dtype
        rows = TextRows.build([row[p] for p in prompts], {k: (row[u], scales[k]) for k, u in zip(guided, uncond, strict=True)})
        return SD3Conditions(embeds.to(dtype), pooled.to(dtype), rows, execution_device(self.pipe, self.pipe.transformer))

    # -- the model call -------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: float, encoded: SD3Conditions) -> torch.Tensor:
        """The guided flow prediction ``u`` (estimate of ``eps - x0``) for all members, in one transformer call.

        Args:
            x: normalised latents ``(K, B, 16, h, w)``, float32.
            t: the noise level ``sigma`` in [0, 1] (the transformer receives ``1000 sigma``).
            encoded: the output of :meth:`encode_conditions` for the same K members.

        Returns:
            ``(K, B, 16, h, w)`` float32; ``u_uncond + guidance (u_cond - u_uncond)`` for guided members.
        """
        if x.ndim != 5:
            raise ValueError(f"x must have shape (K, B, C, h, w), got {tuple(x.shape)}")
        if x.shape[2] != self.latent_channels or x.shape[3] % self.patch_size or x.shape[4] % self.patch_size:
            raise ValueError(
                f"SD3 latents must have {self.latent_channels} channels and sides divisible by {self.patch_size}, "
                f"got {tuple(x.shape[2:])}"
            )
        encoded.rows.check(x)
        transformer = self.pipe.transformer
        device, dtype = encoded.model_device or execution_device(self.pipe, transformer), transformer.dtype

        def call(latents: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            rows = encoded.rows.rows(member, negative)
            out = transformer(
                hidden_states=latents.to(device=device, dtype=dtype),
                timestep=torch.full((latents.shape[0],), 1000.0 * float(t), device=device, dtype=torch.float32),
                encoder_hidden_states=encoded.prompt_embeds[rows.to(encoded.prompt_embeds.device)].to(device),
                pooled_projections=encoded.pooled_prompt_embeds[rows.to(encoded.pooled_prompt_embeds.device)].to(device),
                return_dict=False,
            )[0]
            return out.float()

        return guided_predict(x, encoded.rows.guided, encoded.rows.scales, call).to(x.device)

    # -- images ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] to normalised float32 latents ``(B, 16, H/8, W/8)``.

        A posterior sample normalised as ``(z - shift_factor) * scaling_factor``; one generator per
        image gives per-sample seeds. Sides must be multiples of 16 (a ``ValueError`` names the
        nearest valid size; diffusers would silently resize).
        """
        self.latent_shape(images.shape[-2], images.shape[-1])
        vae = self.pipe.vae
        return vae_encode(vae, images, generator, execution_device(self.pipe, vae), *self._vae_normalisation()).to(images.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(B, 16, h, w)`` to float32 images ``(B, 3, 8h, 8w)`` clamped to [-1, 1]."""
        vae = self.pipe.vae
        return vae_decode(vae, latents, execution_device(self.pipe, vae), *self._vae_normalisation()).to(latents.device)

    def _vae_normalisation(self) -> tuple[float, float]:
        config = self.pipe.vae.config
        return float(config.scaling_factor), float(config.get("shift_factor") or 0.0)
