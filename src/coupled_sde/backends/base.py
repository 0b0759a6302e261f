"""The backbone protocol: what a generative model must provide to be edited with coupled SDEs.

A backbone is implemented once per model family. It answers one question -- "what does the network
predict for these K members (each with its own conditioning) at this noise level?" -- in **one**
batched forward pass. Everything else (forward noising, reverse drifts, backward increments,
couplings, integrators) lives in the core and in :mod:`coupled_sde.editing`, which never learns
which model it runs.

Conventions (the ones diffusers users already know):

* ``schedule``: the noise schedule (:mod:`coupled_sde.schedules`), e.g. rectified flow (FLUX, SD3,
  the digits model: ``x_sigma = (1 - sigma) x0 + sigma eps``) or discrete VP (Stable Diffusion:
  ``alphas_cumprod`` over integer timesteps, passed to :meth:`Backbone.predict` as that integer);
* ``prediction``: what the network returns, ``"flow"`` (``u`` estimates ``eps - x0``), ``"epsilon"``,
  ``"v"`` or ``"x0"``; the schedule converts between them.

Loadable backbones also declare their pipelines, per-method defaults, dtype and image multiple and
register themselves (:mod:`coupled_sde.backends.registry`); :func:`guided_predict` is the one way to
batch members with their guidance rows.

Guidance knobs, per member (see :class:`Condition`):

* ``guidance``: the model's *native* guidance knob -- the distilled guidance embedding for
  FLUX.1-dev, the classifier-free guidance scale for Stable Diffusion / SD3 / the digits model /
  the analytic backbones. ``None`` means the backbone's default.
* ``true_cfg`` with ``negative_prompt``: real classifier-free guidance on top of a distilled model
  (``u_neg + true_cfg (u_pos - u_neg)``), active when ``true_cfg > 1``. For models whose native knob
  already is CFG, ``negative_prompt`` replaces the unconditional prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from ..schedules import Schedule

Prediction = Literal["flow", "epsilon", "v", "x0"]


@dataclass(frozen=True)
class Condition:
    """What one member of a coupled system is conditioned on.

    ``prompt`` is a text prompt for text-to-image models or a class index for class-conditional
    models (``None`` is the unconditional / null prompt).
    """

    prompt: str | int | None
    guidance: float | None = None
    negative_prompt: str | int | None = None
    true_cfg: float = 1.0


@runtime_checkable
class Backbone(Protocol):
    """A generative model seen as a batched predictor over K conditioned members."""

    #: What :meth:`predict` returns: ``"flow"`` (u = eps - x0), ``"epsilon"``, ``"v"`` or ``"x0"``.
    prediction: Prediction
    #: Its noise schedule ``x_t = alpha(t) x0 + sigma(t) eps`` (:mod:`coupled_sde.schedules`): the
    #: sampling grid, the conversions, the forward and reverse SDEs. The model family *is* the schedule.
    schedule: Schedule

    def encode_conditions(self, conditions: list[Condition]) -> Any:
        """Encode the K members' conditioning once per edit (prompt embeddings, guidance vectors).

        The result is opaque to the caller and is passed back to :meth:`predict` at every step.
        """

    def predict(self, x: torch.Tensor, t: float, encoded: Any) -> torch.Tensor:
        """Prediction for every member in **one** batched model call.

        ``x`` has shape ``(K, B, *latent)`` (member k conditioned on ``conditions[k]``) in float32;
        the result has the same shape and dtype, whatever dtype the network runs in. ``t`` is
        ``schedule.model_time`` of the grid time: the noise level ``sigma`` for rectified flow, the
        integer timestep for discrete VP models.
        """


@runtime_checkable
class ImageBackbone(Backbone, Protocol):
    """A backbone that also maps images to latents and back (VAE or identity)."""

    def encode_images(
        self, images: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [-1, 1] to float32 latents ``(B, *latent)``.

        Sampling from a VAE posterior uses ``generator`` (one per image for per-sample seeds).
        """

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Float32 latents ``(B, *latent)`` to images ``(B, C, H, W)`` in [-1, 1]."""


def guided_predict(
    x: torch.Tensor,
    guided: Sequence[int] | torch.Tensor,
    scales: torch.Tensor,
    call: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    rescale: float = 0.0,
) -> torch.Tensor:
    """Members and the guidance rows they need in **one** model call, then classifier-free guidance.

    ``x`` is ``(K, B, *latent)``; ``guided`` lists the G members that need a second, unconditional
    (or negative-prompt) row, with their scales ``(G,)``. ``call(rows, member, negative)`` evaluates
    the model once on ``rows`` ``(K*B + G*B, *latent)`` -- all members' rows, then the guided members'
    again -- where ``member`` ``(N,)`` says which member each row belongs to and ``negative`` ``(N,)``
    whether it is a guidance row (so the backbone picks its prompt or class). Returns
    ``(K, B, *latent)`` with ``out_neg + w (out_pos - out_neg)`` for the guided members.

    ``rescale = phi > 0`` is the guidance rescale of Lin et al. 2024 ("Common Diffusion Noise
    Schedules and Sample Steps are Flawed", §3.4; diffusers' ``guidance_rescale``): each guided
    sample's output is scaled to the standard deviation of its conditional output, then mixed,
    ``phi * out * std(out_pos) / std(out) + (1 - phi) * out`` (standard deviations over the latent).
    """
    K, B = x.shape[0], x.shape[1]
    g = torch.as_tensor(guided, dtype=torch.long)
    G, event = int(g.numel()), tuple(x.shape[2:])
    rows = x.reshape((K * B,) + event)
    if G:
        rows = torch.cat([rows, x[g.to(x.device)].reshape((G * B,) + event)])
    member = torch.cat([torch.arange(K), g.cpu()]).repeat_interleave(B)
    negative = torch.arange(K * B + G * B) >= K * B
    out = call(rows, member, negative)
    pos = out[: K * B].reshape((K, B) + event)
    if not G:
        return pos
    neg = out[K * B :].reshape((G, B) + event)
    w = scales.to(out).reshape((G,) + (1,) * (x.dim() - 1))
    pos = pos.clone()
    index = g.to(pos.device)
    guided = neg + w * (pos[index] - neg)
    if rescale:
        dims = tuple(range(2, guided.dim()))
        ratio = pos[index].std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
        guided = torch.lerp(guided, guided * ratio, float(rescale))
    pos[index] = guided
    return pos
