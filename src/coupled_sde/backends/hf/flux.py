"""FLUX.1 (dev and schnell) as a coupled-SDE backbone, on top of a diffusers ``FluxPipeline``.

The SDE state is the **unpacked, normalised** VAE latent ``(B, 16, h, w)`` in float32 (``h = H /
vae_scale_factor``, normalised as ``(z - shift_factor) * scaling_factor``, exactly what the
``FluxPipeline`` denoises before it packs it). Packing into 2x2 patches, the positional ids, the
dtype cast to the transformer's dtype and back, and the per-sample guidance vector are handled in
:meth:`FluxBackbone.predict`, which evaluates all K members of a coupled system (plus the negative
entries of members using true CFG) in **one** transformer call.

diffusers conventions used (0.42.x, see ``diffusers/pipelines/flux/pipeline_flux.py``):

* ``FluxTransformer2DModel(hidden_states, timestep=sigma, guidance, pooled_projections,
  encoder_hidden_states, txt_ids, img_ids)``; ``timestep`` and ``guidance`` are multiplied by 1000
  inside the model, so the pipeline passes ``t / 1000 = sigma``; ``guidance`` is a per-sample
  ``(batch,)`` vector (only for guidance-distilled models: ``transformer.config.guidance_embeds``);
  ``img_ids`` and ``txt_ids`` are 2-D and shared by the whole batch.
* the output ``u`` estimates ``eps - x0`` for ``x_sigma = (1 - sigma) x0 + sigma eps``.
* the timestep schedule is ``FluxPipeline``'s: ``sigmas = linspace(1, 1/N, N)`` shifted by the
  scheduler (dynamic, resolution-dependent shift ``mu = calculate_shift(image_seq_len, ...)`` for
  FLUX.1-dev; the static ``shift`` of the config otherwise, i.e. none for FLUX.1-schnell).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from coupled_sde.backends.base import Condition, Prediction, guided_predict
from coupled_sde.backends.hf._attention import tapped_values
from coupled_sde.backends.hf._common import execution_device, warn
from coupled_sde.backends.hf._guided import plan_true_cfg, text_rows
from coupled_sde.backends.hf._pipeline import PipelineBackbone
from coupled_sde.backends.registry import register_backbone
from coupled_sde.schedules import RectifiedFlow, calculate_shift

if TYPE_CHECKING:
    from diffusers import FluxPipeline

    from coupled_sde.editing.value_sharing import SharedValues

__all__ = ["FluxBackbone", "FluxConditions", "calculate_shift", "flux_sigmas", "pack_latents", "unpack_latents"]

#: Guidance-embedding value used when a member's ``guidance`` is ``None``: 1.0, the sync-SDE
#: reference setting for both source and target (FluxPipeline's own default is 3.5).
DEFAULT_GUIDANCE = 1.0


#: Scheduler options that change the sigma schedule beyond shifting; when one is set,
#: :func:`flux_sigmas` asks the scheduler itself instead of the closed form.
_EXOTIC_SCHEDULER_OPTIONS = (
    "shift_terminal",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "invert_sigmas",
    "use_flow_sigmas",
)


def flux_sigmas(n_steps: int, image_seq_len: int, scheduler: Any) -> torch.Tensor:
    """The ``n_steps + 1`` noise levels ``FluxPipeline`` uses, in float64, ending with 0.

    With ``s = linspace(1, 1/N, N)``: for a dynamic-shifting scheduler (FLUX.1-dev) ``sigma_i =
    e^mu / (e^mu + 1/s_i - 1)`` with ``mu = calculate_shift(image_seq_len, base_image_seq_len,
    max_image_seq_len, base_shift, max_shift)`` from the scheduler config (the "linear"
    ``time_shift_type`` uses ``mu / (mu + 1/s_i - 1)``); otherwise the static shift ``sigma_i =
    shift s_i / (1 + (shift - 1) s_i)`` (``shift = 1`` for FLUX.1-schnell: no shift). Then
    ``sigma_N = 0`` is appended. This is what ``FlowMatchEulerDiscreteScheduler.set_timesteps(
    sigmas=s, mu=mu)`` computes, but in float64 (the scheduler works in float32).

    Scheduler configs with options beyond shifting (Karras/exponential/beta sigmas, a
    ``shift_terminal``, ...) are delegated to a fresh copy of the scheduler and converted to float64.
    """
    config = scheduler.config
    if any(config.get(option) for option in _EXOTIC_SCHEDULER_OPTIONS):
        s = np.linspace(1.0, 1.0 / n_steps, n_steps)
        dynamic = RectifiedFlow.from_config(config).dynamic
        mu = calculate_shift(image_seq_len, *dynamic) if dynamic else calculate_shift(image_seq_len)
        fresh = type(scheduler).from_config(config)
        sigmas = None if config.get("use_flow_sigmas") else s.tolist()
        fresh.set_timesteps(num_inference_steps=n_steps, sigmas=sigmas, mu=mu)
        return fresh.sigmas.to(torch.float64).cpu()
    return RectifiedFlow.from_config(config).sigmas(n_steps, image_seq_len)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` to FLUX tokens ``(N, h/2 * w/2, 4C)``: each 2x2 patch becomes one token.

    Same layout as ``FluxPipeline._pack_latents`` (channel-major within a token: ``c, dy, dx``).
    """
    n, c, h, w = latents.shape
    patches = latents.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(n, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents` for a latent of ``height x width`` (latent pixels, not image pixels)."""
    n, _, dim = tokens.shape
    patches = tokens.view(n, height // 2, width // 2, dim // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(n, dim // 4, height, width)


def latent_image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Positional ids ``(h/2 * w/2, 3)`` of the packed tokens: ``(0, row, column)``, as ``FluxPipeline``.

    2-D and shared across the batch (3-D ids are deprecated in diffusers).
    """
    rows, cols = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    return ids.to(device=device, dtype=dtype)


@dataclass(frozen=True)
class FluxConditions:
    """The K members' conditioning, encoded once per edit by :meth:`FluxBackbone.encode_conditions`.

    Attributes:
        prompt_embeds: T5 embeddings of the distinct prompts, ``(U, seq, dim)``, transformer dtype.
        pooled_prompt_embeds: CLIP pooled embeddings of the distinct prompts, ``(U, pooled_dim)``.
        text_ids: the shared 2-D text positional ids ``(seq, 3)``.
        prompt_rows: row of each member's prompt in the embeddings, ``(K,)``.
        guidance: each member's guidance-embedding value, float32 ``(K,)``.
        cfg_members: indices of the members that use true CFG, ``(Kc,)``.
        negative_rows: row of each such member's negative prompt, ``(Kc,)``.
        true_cfg: each such member's true-CFG scale, float32 ``(Kc,)``.
        model_device: where the transformer's inputs go, looked up once per edit (diffusers walks
            every module to find it, which costs a millisecond per call); ``None`` looks it up per call.
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    text_ids: torch.Tensor
    prompt_rows: torch.Tensor
    guidance: torch.Tensor
    cfg_members: torch.Tensor
    negative_rows: torch.Tensor
    true_cfg: torch.Tensor
    model_device: torch.device | None = None

    @property
    def members(self) -> int:
        """K, the number of conditioned members."""
        return int(self.prompt_rows.shape[0])


@register_backbone
class FluxBackbone(PipelineBackbone):
    """A ``FluxPipeline`` (FLUX.1-dev, FLUX.1-schnell or a compatible checkpoint) seen as an :class:`ImageBackbone`.

    Build it from an existing pipeline -- ``FluxBackbone(pipe)`` keeps whatever the pipeline was set
    up with (``enable_model_cpu_offload``, LoRAs, a bf16 transformer, ...) -- or load one with
    :meth:`from_pretrained`. Nothing is stored on the pipeline, and the backbone holds no per-edit
    state: :meth:`encode_conditions` returns the encoded conditioning that :meth:`predict` takes.

    Args:
        pipe: the pipeline whose ``transformer``, ``vae``, text encoders and scheduler config are used.
        default_guidance: guidance-embedding value for members whose ``guidance`` is ``None``
            (FLUX.1-dev only; schnell has no guidance embedding). Default 1.0, the sync-SDE
            reference setting; note ``FluxPipeline``'s own default is 3.5, and FlowEdit uses 1.5
            (source) / 5.5 (target), which an editor passes per member.
        max_sequence_length: T5 prompt length, as ``FluxPipeline``'s argument of that name (512;
            256 is the usual value for schnell).
        value_blocks: the single-stream blocks whose attention values an inversion shares with the
            edit (:meth:`share_attention_values`); default the last 18 of FLUX.1's 38, blocks 20-37, as
            RF-Solver-Edit and FireFlow (the same proportion of a smaller model's blocks).
    """

    name = "flux"
    pipelines = ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline")
    dtype = torch.bfloat16
    patch_size = 2
    size_reason = " and FLUX packs 2x2 latent patches"
    init_options = ("default_guidance", "max_sequence_length", "value_blocks")
    #: The sync-SDE reference (28 steps, i0 = 4, guidance embedding 1.0 for source and target; SDEdit and
    #: ODE inversion on the same grid and guidance, so that only the coupling differs) and FlowEdit's
    #: published FLUX setting (n_max = 24, guidance 1.5 / 5.5).
    defaults = {
        "sync-sde": {"steps": 28, "start": 4, "guidance": 1.0},
        "flowedit": {"steps": 28, "start": 4, "guidance": 5.5, "source_guidance": 1.5},
        "sdedit": {"steps": 28, "start": 4, "guidance": 1.0},
        "ode-inversion": {"steps": 28, "start": 4, "guidance": 1.0},
        # RF-Inversion as diffusers' community pipeline runs it: the whole schedule, guidance 0 (source) / 3.5
        "rf-inversion": {"steps": 28, "start": 0, "guidance": 3.5, "source_guidance": 0.0},
    }
    prediction: Prediction = "flow"

    def __init__(
        self,
        pipe: FluxPipeline,
        *,
        default_guidance: float = DEFAULT_GUIDANCE,
        max_sequence_length: int = 512,
        value_blocks: Sequence[int] | None = None,
    ):
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        self.max_sequence_length = int(max_sequence_length)
        n_single = len(pipe.transformer.single_transformer_blocks)
        blocks = range(n_single * 20 // 38, n_single) if value_blocks is None else [int(b) for b in value_blocks]
        if not blocks or any(not 0 <= b < n_single for b in blocks):
            raise ValueError(f"value_blocks must be indices of the {n_single} single-stream blocks, got {list(blocks)}")
        #: The single-stream blocks whose attention values attention sharing records and injects.
        self.value_blocks = tuple(blocks)
        config = pipe.scheduler.config
        exotic = any(config.get(option) for option in _EXOTIC_SCHEDULER_OPTIONS)
        delegate = (lambda n, tokens: flux_sigmas(n, tokens, pipe.scheduler)) if exotic else None
        #: FluxPipeline's schedule: dynamic shift from the number of packed tokens (FLUX.1-dev), static otherwise.
        self.schedule = RectifiedFlow.from_config(config, patch=2, sigmas_fn=delegate)

    # -- shapes ---------------------------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        """Channels of the unpacked latent (16 for FLUX.1): the transformer's ``in_channels / 4``."""
        return int(self.pipe.transformer.config.in_channels) // 4

    @property
    def has_guidance_embedding(self) -> bool:
        """Whether the transformer takes a guidance value (FLUX.1-dev) or not (FLUX.1-schnell)."""
        return bool(self.pipe.transformer.config.guidance_embeds)

    # -- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> FluxConditions:
        """Encode the members' prompts once (one text-encoder batch over the distinct prompts).

        Per member: ``prompt`` (``None`` = empty prompt), ``guidance`` (guidance-embedding value,
        ``None`` -> ``default_guidance``; ignored with a warning by models without a guidance
        embedding), and true CFG when ``true_cfg > 1`` **and** a ``negative_prompt`` is given
        (like ``FluxPipeline``; either one alone is ignored with a warning).
        """
        prompts, guided = plan_true_cfg(conditions)
        if not self.has_guidance_embedding and any(c.guidance is not None for c in conditions):
            warn("this FLUX model has no guidance embedding (schnell-like); the members' guidance is ignored")
        unique, rows = text_rows(prompts, guided)
        device = execution_device(self.pipe)
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=unique, prompt_2=None, device=device, max_sequence_length=self.max_sequence_length
        )
        dtype = self.pipe.transformer.dtype
        guidance = [self.default_guidance if c.guidance is None else float(c.guidance) for c in conditions]
        return FluxConditions(
            prompt_embeds=embeds.to(dtype),
            pooled_prompt_embeds=pooled.to(dtype),
            text_ids=text_ids,
            prompt_rows=rows.prompt_rows.to(device),
            guidance=torch.tensor(guidance, dtype=torch.float32, device=device),
            cfg_members=rows.guided.to(device),
            negative_rows=rows.uncond_rows[rows.guided].to(device),
            true_cfg=rows.scales.to(device),
            model_device=self.model_device(),
        )

    # -- attention sharing ----------------------------------------------------------------------

    def share_attention_values(self, shared: SharedValues) -> AbstractContextManager[None]:
        """Within the block, the value projections of the :attr:`value_blocks` single-stream
        attention layers go through ``shared`` (recorded during an inversion, read during the edit:
        RF-Solver-Edit's and FireFlow's feature sharing). As those editors, the whole sequence's
        values (text and image tokens) are shared; the original attention processors are put back
        on exit."""
        blocks = self.pipe.transformer.single_transformer_blocks
        return tapped_values({b: blocks[b].attn for b in self.value_blocks}, shared.tap)

    # -- the model call -------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: float, encoded: FluxConditions) -> torch.Tensor:
        """The flow prediction ``u`` (estimate of ``eps - x0``) for all members, in one transformer call.

        Args:
            x: unpacked normalised latents ``(K, B, C, h, w)``, float32; member ``k`` is conditioned
                on ``conditions[k]``.
            t: the noise level ``sigma`` in [0, 1] (diffusers' ``timestep / 1000``).
            encoded: the output of :meth:`encode_conditions` for the same K members.

        Returns:
            ``(K, B, C, h, w)`` float32. Members with true CFG get ``u_neg + true_cfg (u_pos -
            u_neg)``; their negative entries ride in the same batch as extra rows.
        """
        self._check_state(x, encoded)
        prompt_rows, guidance = encoded.prompt_rows.cpu(), encoded.guidance
        negative_row = torch.zeros_like(prompt_rows)
        negative_row[encoded.cfg_members.cpu()] = encoded.negative_rows.cpu()

        def call(latents: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            rows = torch.where(negative, negative_row[member], prompt_rows[member]).to(encoded.prompt_rows.device)
            return self._transformer(latents, float(t), encoded, rows, guidance[member.to(guidance.device)])

        return guided_predict(x, encoded.cfg_members.cpu(), encoded.true_cfg, call).to(x.device)

    def _check_state(self, x: torch.Tensor, encoded: FluxConditions) -> tuple[int, int, int, int, int]:
        """Validate ``x``'s shape against the members and FLUX's 2x2 packing; return it."""
        self.check_state(x)
        members, batch, channels, height, width = x.shape
        if members != encoded.members:
            raise ValueError(f"x has {members} members but the conditions were encoded for {encoded.members}")
        if channels != self.latent_channels or height % 2 or width % 2:
            raise ValueError(f"FLUX latents must have {self.latent_channels} channels and even sides, got {tuple(x.shape[2:])}")
        return members, batch, channels, height, width

    def _transformer(
        self, latents: torch.Tensor, sigma: float, encoded: FluxConditions, rows: torch.Tensor, guidance: torch.Tensor
    ) -> torch.Tensor:
        """One call of the transformer on unpacked latents ``(N, C, h, w)``; returns float32 ``(N, C, h, w)``."""
        transformer = self.pipe.transformer
        device, dtype = encoded.model_device or execution_device(self.pipe, transformer), transformer.dtype
        n, _, height, width = latents.shape
        out = transformer(
            hidden_states=pack_latents(latents).to(device=device, dtype=dtype),
            timestep=torch.full((n,), sigma, device=device, dtype=dtype),
            guidance=guidance.to(device) if self.has_guidance_embedding else None,
            pooled_projections=encoded.pooled_prompt_embeds[rows].to(device),
            encoder_hidden_states=encoded.prompt_embeds[rows].to(device),
            txt_ids=encoded.text_ids.to(device),
            img_ids=latent_image_ids(height, width, device, dtype),
            return_dict=False,
        )[0]
        return unpack_latents(out.float(), height, width)
