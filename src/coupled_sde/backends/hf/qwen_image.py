"""Qwen-Image as a coupled-SDE backbone, on top of a diffusers ``QwenImagePipeline``.

Rectified flow (``prediction = "flow"``) on the normalised VAE latent ``(B, 16, H/8, W/8)`` in float32:
Qwen-Image's VAE is a (causal 3-D) video VAE used on one frame, normalised per channel,
``(z - latents_mean) / latents_std``. The transformer sees the latent packed into 2x2 patches
``(B, h/2 w/2, 64)`` (the FLUX layout), the noise level as ``timestep = sigma``, the prompt
embeddings with their padding mask, and ``img_shapes = [(1, h/2, w/2)]`` per row.

Guidance: Qwen-Image is not guidance-distilled; its native knob is classifier-free guidance, which
the pipeline calls ``true_cfg_scale`` (default 4.0) and runs only with a negative prompt, and it
**rescales** the guided prediction to the per-token norm of the conditional one:
``g = u_neg + s (u_pos - u_neg)``, ``u = g * |u_pos| / |g|`` (norms over each token's features).
Here ``guidance`` is that scale (``None`` -> ``default_guidance``), applied when ``> 1`` against
the member's ``negative_prompt`` or, without one, ``" "`` (the value the model card passes). All
members and their CFG rows go through the transformer in **one** call; prompts of different
lengths are padded and masked, as the pipeline batches them.

Schedule: ``s = linspace(1, 1/N, N)`` with FLUX's resolution-dependent shift ``mu`` (Qwen-Image's
config: ``max_shift`` 0.9 at 8192 tokens) and a terminal stretch to ``shift_terminal = 0.02``: the
scheduler computes it (:func:`~coupled_sde.backends.hf.flux.flux_sigmas` delegates such
configs), so this is the pipeline's schedule by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from coupled_sde.backends.base import Condition, Prediction, guided_predict
from coupled_sde.backends.hf._common import Generators, batch_generators, execution_device, vae_precision
from coupled_sde.backends.hf._guided import TextRows, plan_native_cfg, reject_true_cfg, text_rows
from coupled_sde.backends.hf._pipeline import PipelineBackbone
from coupled_sde.backends.hf.flux import flux_sigmas, pack_latents, unpack_latents
from coupled_sde.backends.registry import register_backbone
from coupled_sde.schedules import RectifiedFlow

if TYPE_CHECKING:
    from diffusers import QwenImagePipeline

__all__ = ["QwenImageBackbone", "QwenImageConditions"]

#: CFG scale for members whose ``guidance`` is ``None``: the pipeline's ``true_cfg_scale`` default.
DEFAULT_GUIDANCE = 4.0
#: The unconditional text of guided members without a negative prompt (the model card's ``" "``).
DEFAULT_NEGATIVE = " "


@dataclass(frozen=True)
class QwenImageConditions:
    """The K members' conditioning, encoded once per edit by :meth:`QwenImageBackbone.encode_conditions`.

    Attributes:
        prompt_embeds: text-encoder hidden states of the distinct texts, padded ``(U, L, dim)``.
        prompt_mask: their padding mask ``(U, L)`` (1 = token), or ``None`` when nothing is padded.
        rows: the members' text rows and their CFG rows (:class:`TextRows`).
        model_device: where the transformer's inputs go, looked up once per edit.
    """

    prompt_embeds: torch.Tensor
    prompt_mask: torch.Tensor | None
    rows: TextRows
    model_device: torch.device | None = None

    @property
    def members(self) -> int:
        """K, the number of conditioned members."""
        return self.rows.members


def qwen_image_sigmas(n_steps: int, image_seq_len: int, scheduler: Any) -> torch.Tensor:
    """The pipeline's noise levels (:func:`~coupled_sde.backends.hf.flux.flux_sigmas`: FLUX's shift, then the
    scheduler's terminal stretch); a clear error where diffusers' stretch is not finite (one step)."""
    sigmas = flux_sigmas(n_steps, image_seq_len, scheduler)
    if not torch.isfinite(sigmas).all():  # the terminal stretch divides by 0 for a single step
        raise ValueError(f"the scheduler's schedule for n_steps={n_steps} is not finite (shift_terminal needs n_steps >= 2)")
    return sigmas


@register_backbone
class QwenImageBackbone(PipelineBackbone):
    """A ``QwenImagePipeline`` (Qwen-Image, Qwen-Image-2512, ...) seen as an image backbone.

    Build it from a pipeline (offloading hooks, LoRAs and dtypes are kept) or with
    :meth:`from_pretrained`. Stateless: :meth:`encode_conditions` returns what :meth:`predict` takes.

    Args:
        pipe: the pipeline whose transformer, VAE, text encoder and scheduler config are used.
        default_guidance: CFG scale for members whose ``guidance`` is ``None`` (4.0).
        max_sequence_length: maximum prompt length in tokens (the pipeline's 1024).
    """

    name = "qwen-image"
    #: The diffusers pipeline classes this backbone wraps (their components are the same).
    pipelines = ("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline")
    dtype = torch.bfloat16
    patch_size = 2
    size_reason = " and Qwen-Image packs 2x2 latent patches"
    init_options = ("default_guidance", "max_sequence_length")
    #: The FLUX.1 reference grid (28 steps from index 4) with the pipeline's CFG 4.0 (the members'
    #: default): a starting point, no setting is published for Qwen-Image.
    defaults = {method: {"steps": 28, "start": 4} for method in ("sync-sde", "sdedit", "ode-inversion", "flowedit")}
    prediction: Prediction = "flow"

    def __init__(self, pipe: QwenImagePipeline, *, default_guidance: float = DEFAULT_GUIDANCE, max_sequence_length: int = 1024):
        if pipe.transformer.config.get("guidance_embeds", False):
            raise ValueError("guidance-embedded Qwen-Image transformers are not supported (none is published)")
        self.pipe = pipe
        self.default_guidance = float(default_guidance)
        self.max_sequence_length = int(max_sequence_length)
        #: The pipeline's schedule over 2x2-packed tokens (shift, then the scheduler's terminal stretch).
        self.schedule = RectifiedFlow.from_config(
            pipe.scheduler.config, patch=2, sigmas_fn=lambda n, tokens: qwen_image_sigmas(n, tokens, pipe.scheduler)
        )

    # -- shapes and schedule --------------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        """Latent channels (16): the VAE's ``z_dim``."""
        return int(self.pipe.vae.config.z_dim)

    # -- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_conditions(self, conditions: list[Condition]) -> QwenImageConditions:
        """Encode the members' texts once (one text-encoder batch over the distinct texts).

        Per member: ``prompt`` (``None`` = empty prompt), ``guidance`` = CFG scale (``None`` ->
        ``default_guidance``; CFG when ``> 1``) against its ``negative_prompt`` or ``" "``.
        ``true_cfg`` must stay 1 (the native knob already is CFG).
        """
        reject_true_cfg(
            conditions,
            ": Qwen-Image's guidance already is classifier-free guidance; set guidance (and negative_prompt) instead",
        )
        prompts, guided = plan_native_cfg(conditions, self.default_guidance, above_one=True, negative=DEFAULT_NEGATIVE)
        unique, rows = text_rows(prompts, guided)
        device = execution_device(self.pipe)
        embeds, mask = self.pipe.encode_prompt(prompt=unique, device=device, max_sequence_length=self.max_sequence_length)
        return QwenImageConditions(embeds.to(self.pipe.transformer.dtype), mask, rows, self.model_device())

    # -- the model call -------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: float, encoded: QwenImageConditions) -> torch.Tensor:
        """The guided (and norm-rescaled) flow prediction ``u`` for all members, in one transformer call.

        Args:
            x: normalised latents ``(K, B, 16, h, w)``, float32 (``h``, ``w`` even).
            t: the noise level ``sigma`` in [0, 1].
            encoded: the output of :meth:`encode_conditions` for the same K members.

        Returns:
            ``(K, B, 16, h, w)`` float32.
        """
        self.check_state(x)
        if x.shape[2] != self.latent_channels or x.shape[3] % 2 or x.shape[4] % 2:
            raise ValueError(
                f"Qwen-Image latents must have {self.latent_channels} channels and even sides, got {tuple(x.shape[2:])}"
            )
        encoded.rows.check(x)
        members, batch, height, width = x.shape[0], x.shape[1], x.shape[3], x.shape[4]
        transformer = self.pipe.transformer
        device, dtype = encoded.model_device or execution_device(self.pipe, transformer), transformer.dtype
        raw: list[torch.Tensor] = []

        def call(latents: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            n = latents.shape[0]
            rows = encoded.rows.rows(member, negative).to(encoded.prompt_embeds.device)
            mask = encoded.prompt_mask
            out = transformer(
                hidden_states=pack_latents(latents).to(device=device, dtype=dtype),
                timestep=torch.full((n,), float(t), device=device, dtype=dtype),
                guidance=None,
                encoder_hidden_states=encoded.prompt_embeds[rows].to(device),
                encoder_hidden_states_mask=None if mask is None else mask[rows.to(mask.device)].to(device),
                img_shapes=[[(1, height // 2, width // 2)]] * n,
                return_dict=False,
            )[0]
            raw.append(out.float())
            return unpack_latents(out.float(), height, width)

        u = guided_predict(x, encoded.rows.guided, encoded.rows.scales, call)
        guided = encoded.rows.guided
        if guided.numel():  # the pipeline's rescale: each guided token to the norm of its conditional one
            index = guided.to(u.device)
            positive = raw[0][: members * batch].view(members, batch, *raw[0].shape[1:])[index]
            mixed = pack_latents(u[index].reshape(-1, *u.shape[2:])).view(positive.shape)
            rescaled = mixed * (positive.norm(dim=-1, keepdim=True) / mixed.norm(dim=-1, keepdim=True))
            u = u.clone()
            u[index] = unpack_latents(rescaled.reshape(-1, *rescaled.shape[2:]), height, width).view(u[index].shape)
        return u.to(x.device)

    # -- images ---------------------------------------------------------------------------------

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.pipe.vae.config
        mean = torch.tensor(config.latents_mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(config.latents_std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return mean, std

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] to normalised float32 latents ``(B, 16, H/8, W/8)``.

        A posterior sample of the one-frame video VAE (noise drawn like diffusers'
        ``latent_dist.sample``; one generator per image gives per-sample seeds), normalised with
        the VAE's ``latents_mean`` / ``latents_std``. Sides must be multiples of 16.
        """
        from diffusers.utils.torch_utils import randn_tensor

        if images.ndim != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
        self.latent_shape(images.shape[-2], images.shape[-1])
        generator = batch_generators(generator, images.shape[0])
        vae = self.pipe.vae
        device = execution_device(self.pipe, vae)
        with vae_precision(vae):
            dist = vae.encode(images.to(device=device, dtype=vae.dtype)[:, :, None]).latent_dist
            mean, std = dist.mean.float(), dist.std.float()
        z = (mean + std * randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32))[:, :, 0]
        shift, scale = self._normalisation(z.device)
        return ((z - shift) / scale).to(images.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(B, 16, h, w)`` to float32 images ``(B, 3, 8h, 8w)`` clamped to [-1, 1]."""
        vae = self.pipe.vae
        device = execution_device(self.pipe, vae)
        shift, scale = self._normalisation(latents.device)
        z = (latents.float() * scale + shift)[:, :, None]
        with vae_precision(vae):
            images = vae.decode(z.to(device=device, dtype=vae.dtype), return_dict=False)[0][:, :, 0]
        return images.float().clamp(-1.0, 1.0).to(latents.device)
