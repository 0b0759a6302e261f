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

Skip-layer guidance (SD3.5 Medium's recommended extra guidance; diffusers' ``skip_guidance_layers``,
after Stability AI's SD3.5 reference code and the STG/SLG idea of Hyung et al. 2024): inside a window
of noise levels, the guided members' conditional rows are evaluated once more with some transformer
blocks skipped and ``scale (u_cond - u_skip)`` is added to their guided prediction
(:class:`SkipLayerGuidance`). The pipeline states the window as a fraction of its step *index*,
which a drift evaluated at a noise level does not see; the window here is the interval of noise
levels, and :meth:`StableDiffusion3Backbone.pipeline_skip_layer_guidance` converts the pipeline's
fractions for a given number of steps (then the same steps get it).

Per-method defaults (:attr:`StableDiffusion3Backbone.defaults`, registry name ``"sd3"``): FlowEdit's
published SD3 settings (Kulikov et al., ICCV 2025): 50 steps, ``n_max = 33``, source / target CFG
3.5 / 13.5. The other methods get the FLUX.1 reference grid (28 steps from index 4, sigma = 0.95 on
this schedule) and the pipeline's CFG: an untuned starting point, no published setting exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from coupled_sde.backends.base import Condition, Prediction, guided_predict
from coupled_sde.backends.hf._common import execution_device
from coupled_sde.backends.hf._guided import PooledTextConditions, plan_native_cfg, reject_true_cfg, text_rows
from coupled_sde.backends.hf._pipeline import PipelineBackbone
from coupled_sde.backends.hf.flux import _EXOTIC_SCHEDULER_OPTIONS
from coupled_sde.backends.registry import register_backbone
from coupled_sde.schedules import RectifiedFlow, calculate_shift

if TYPE_CHECKING:
    from diffusers import StableDiffusion3Pipeline

__all__ = ["SkipLayerGuidance", "StableDiffusion3Backbone", "SD3Conditions", "sd3_sigmas"]

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


class SD3Conditions(PooledTextConditions):
    """The K members' conditioning, encoded once per edit by :meth:`StableDiffusion3Backbone.encode_conditions`:
    ``prompt_embeds`` are the joint CLIP + T5 embeddings ``(U, 77 + T5 length, dim)``, ``pooled_prompt_embeds``
    the concatenated CLIP projections ``(U, pooled_dim)``."""


@dataclass(frozen=True)
class SkipLayerGuidance:
    """Skip-layer guidance: ``u <- u + scale (u_cond - u_skip)`` for guided members at noise levels in ``window``.

    Attributes:
        layers: the transformer blocks skipped in the extra call (SD3.5 Medium: 7, 8, 9).
        scale: the guidance scale (diffusers' ``skip_layer_guidance_scale``, 2.8).
        window: ``(sigma_low, sigma_high)``, inclusive: where it applies. Each evaluation inside it
            costs one more transformer call on the guided members' conditional rows.
    """

    layers: tuple[int, ...]
    scale: float = 2.8
    window: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not self.layers or any(int(b) != b or b < 0 for b in self.layers):
            raise ValueError(f"skip-layer guidance needs block indices >= 0, got {self.layers!r}")
        if not self.scale >= 0:
            raise ValueError(f"the skip-layer guidance scale must be >= 0, got {self.scale!r}")
        low, high = self.window
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"the skip-layer guidance window must satisfy 0 <= low <= high <= 1, got {self.window!r}")

    def applies(self, sigma: float) -> bool:
        low, high = self.window
        return low <= sigma <= high


@register_backbone
class StableDiffusion3Backbone(PipelineBackbone):
    """A ``StableDiffusion3Pipeline`` (SD3 medium, SD3.5 medium / large / large-turbo) seen as an image backbone.

    Build it from a pipeline (``StableDiffusion3Backbone(pipe)`` keeps offloading hooks, LoRAs and
    dtypes) or with :meth:`from_pretrained` (pass ``text_encoder_3=None`` to drop T5, about 9.5 GB
    in bf16, at some cost in prompt following). Stateless: :meth:`encode_conditions` returns what
    :meth:`predict` takes.

    Args:
        pipe: the pipeline whose transformer, VAE, three text encoders and scheduler config are used.
        default_guidance: CFG scale for members whose ``guidance`` is ``None`` (7.0, the pipeline's
            default; FlowEdit uses 3.5 / 13.5, see :attr:`defaults`).
        max_sequence_length: T5 prompt length (the pipeline's 256).
        skip_layer_guidance: a :class:`SkipLayerGuidance` for every edit and generation (``None``:
            none); :meth:`pipeline_skip_layer_guidance` builds the pipeline's.
    """

    name = "sd3"
    #: The diffusers pipeline classes this backbone wraps (their components are the same).
    pipelines = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline")
    dtype = torch.bfloat16
    patch_size = 2
    size_reason = " and the transformer patchifies 2x2"
    init_options = ("default_guidance", "max_sequence_length", "skip_layer_guidance")
    #: FlowEdit's published SD3 setting (n_max = 33 of 50 steps, i.e. start 17); the FLUX.1
    #: reference grid for the others (not tuned for SD3).
    defaults = {
        "flowedit": {"steps": 50, "n_max": 33, "guidance": 13.5, "source_guidance": 3.5},
        "sync-sde": {"steps": 28, "start": 4},
        "sdedit": {"steps": 28, "start": 4},
        "ode-inversion": {"steps": 28, "start": 4},
    }
    prediction: Prediction = "flow"

    def __init__(
        self,
        pipe: StableDiffusion3Pipeline,
        *,
        default_guidance: float = DEFAULT_GUIDANCE,
        max_sequence_length: int = 256,
        skip_layer_guidance: SkipLayerGuidance | None = None,
    ):
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        self.max_sequence_length = int(max_sequence_length)
        blocks = len(pipe.transformer.transformer_blocks)
        if skip_layer_guidance is not None and max(skip_layer_guidance.layers) >= blocks:
            raise ValueError(f"skip-layer guidance layers {skip_layer_guidance.layers} exceed the transformer's {blocks} blocks")
        #: Skip-layer guidance applied by :meth:`predict` (``None``: none).
        self.skip_layer_guidance = skip_layer_guidance
        #: The pipeline's (double-shifted) schedule, over the transformer's 2x2 patches.
        self.schedule = RectifiedFlow.from_config(
            pipe.scheduler.config, patch=2, sigmas_fn=lambda n, tokens: sd3_sigmas(n, tokens, pipe.scheduler)
        )

    def pipeline_skip_layer_guidance(
        self,
        n_steps: int,
        height: int,
        width: int,
        layers: Sequence[int] = (7, 8, 9),
        scale: float = 2.8,
        start: float = 0.01,
        stop: float = 0.2,
    ) -> SkipLayerGuidance | None:
        """The pipeline's ``skip_guidance_layers=layers, skip_layer_guidance_scale=scale, _start=start,
        _stop=stop`` for ``n_steps`` steps on an ``height x width`` image: its steps ``N start < i < N stop``
        as the window of their noise levels (``None`` when no step falls inside)."""
        if not 0.0 <= start <= stop <= 1.0:
            raise ValueError(f"skip-layer guidance needs 0 <= start <= stop <= 1, got {start}, {stop}")
        _, h, w = self.latent_shape(height, width)
        sigmas = self.schedule.sigmas(n_steps, self.schedule.tokens((self.latent_channels, h, w)))
        inside = [float(sigmas[i]) for i in range(n_steps) if n_steps * start < i < n_steps * stop]
        if not inside:
            return None
        return SkipLayerGuidance(tuple(int(b) for b in layers), float(scale), (min(inside), max(inside)))

    # -- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> SD3Conditions:
        """Encode the members' texts once (one batch per text encoder over the distinct texts).

        Per member: ``prompt`` (``None`` = empty prompt), ``guidance`` = CFG scale (``None`` ->
        ``default_guidance``); a member with ``guidance != 1`` gets an unconditional row from its
        ``negative_prompt`` or the empty prompt. ``true_cfg`` must stay 1 (the native knob already
        is CFG).
        """
        reject_true_cfg(
            conditions, " to SD3, whose guidance already is classifier-free guidance; set guidance (and negative_prompt) instead"
        )
        prompts, guided = plan_native_cfg(conditions, self.default_guidance)
        unique, rows = text_rows(prompts, guided)
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
        return SD3Conditions(embeds.to(dtype), pooled.to(dtype), rows, self.model_device())

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
        self.check_state(x)
        if x.shape[2] != self.latent_channels or x.shape[3] % self.patch_size or x.shape[4] % self.patch_size:
            raise ValueError(
                f"SD3 latents must have {self.latent_channels} channels and sides divisible by {self.patch_size}, "
                f"got {tuple(x.shape[2:])}"
            )
        encoded.rows.check(x)
        transformer = self.pipe.transformer
        device, dtype = encoded.model_device or execution_device(self.pipe, transformer), transformer.dtype

        def call(latents: torch.Tensor, member: torch.Tensor, negative: torch.Tensor, skip_layers: Any = None) -> torch.Tensor:
            rows = encoded.rows.rows(member, negative)
            out = transformer(
                hidden_states=latents.to(device=device, dtype=dtype),
                timestep=torch.full((latents.shape[0],), 1000.0 * float(t), device=device, dtype=torch.float32),
                encoder_hidden_states=encoded.prompt_embeds[rows.to(encoded.prompt_embeds.device)].to(device),
                pooled_projections=encoded.pooled_prompt_embeds[rows.to(encoded.pooled_prompt_embeds.device)].to(device),
                return_dict=False,
                skip_layers=skip_layers,
            )[0]
            return out.float()

        slg, guided = self.skip_layer_guidance, encoded.rows.guided
        if slg is None or not guided.numel() or not slg.applies(float(t)):
            return guided_predict(x, guided, encoded.rows.scales, call).to(x.device)
        # skip-layer guidance: the guided members' conditional rows once more, with slg.layers skipped
        kept: dict[str, torch.Tensor] = {}

        def keep(latents: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            kept["out"] = call(latents, member, negative)
            return kept["out"]

        out = guided_predict(x, guided, encoded.rows.scales, keep).to(x.device)
        K, B = x.shape[:2]
        index = guided.to(x.device)
        cond = kept["out"][: K * B].reshape(x.shape)[index]
        member = guided.cpu().repeat_interleave(B)
        skipped = call(x[index].flatten(0, 1), member, torch.zeros_like(member, dtype=torch.bool), list(slg.layers))
        out[index] += slg.scale * (cond - skipped.reshape(cond.shape))
        return out
