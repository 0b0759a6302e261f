"""The backbone protocol: what a generative model must provide to be edited with coupled SDEs.

A backbone is implemented once per model family. It answers one question -- "what does the network
predict for these K members (each with its own conditioning) at this noise level?" -- in **one**
batched forward pass. Everything else (forward noising, reverse drifts, backward increments,
couplings, integrators) lives in the core and in :mod:`coupled_sde.editing`, which never learns
which model it runs.

Conventions (the ones diffusers users already know):

* ``prediction == "flow"`` (rectified flow: FLUX, SD3, the shipped digits model): noise level
  ``sigma`` in [0, 1], ``x_sigma = (1 - sigma) x0 + sigma eps``; the network output ``u`` estimates
  ``eps - x0`` (so ``-u`` points towards the data).
* ``prediction in {"epsilon", "v"}`` (VP diffusion: Stable Diffusion 1.x/2.x): a discrete
  ``alphas_cumprod`` schedule indexed by integer timesteps; ``t`` is passed as that integer.

Guidance knobs, per member (see :class:`Condition`):

* ``guidance``: the model's *native* guidance knob -- the distilled guidance embedding for
  FLUX.1-dev, the classifier-free guidance scale for Stable Diffusion / SD3 / the digits model /
  the analytic backbones. ``None`` means the backbone's default.
* ``true_cfg`` with ``negative_prompt``: real classifier-free guidance on top of a distilled model
  (``u_neg + true_cfg (u_pos - u_neg)``), active when ``true_cfg > 1``. For models whose native knob
  already is CFG, ``negative_prompt`` replaces the unconditional prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch

Prediction = Literal["flow", "epsilon", "v"]


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

    #: What :meth:`predict` returns: ``"flow"`` (u = eps - x0), ``"epsilon"`` or ``"v"``.
    prediction: Prediction

    def encode_conditions(self, conditions: list[Condition]) -> Any:
        """Encode the K members' conditioning once per edit (prompt embeddings, guidance vectors).

        The result is opaque to the caller and is passed back to :meth:`predict` at every step.
        """

    def predict(self, x: torch.Tensor, t: float, encoded: Any) -> torch.Tensor:
        """Prediction for every member in **one** batched model call.

        ``x`` has shape ``(K, B, *latent)`` (member k conditioned on ``conditions[k]``) in float32;
        the result has the same shape and dtype, whatever dtype the network runs in. ``t`` is the
        noise level ``sigma`` for flow models and the integer timestep for VP models.
        """


@runtime_checkable
class FlowBackbone(Backbone, Protocol):
    """A rectified-flow backbone (``prediction == "flow"``) also gives its noise-level schedule,
    which the flow editing methods use unless ``sigmas=`` is passed."""

    def sigmas(self, n_steps: int, latent_shape: tuple[int, ...]) -> torch.Tensor:
        """Float64 noise levels ``sigma_0 > ... > sigma_N = 0`` (``n_steps + 1`` values), e.g. FLUX's
        resolution-dependent shifted schedule."""


@runtime_checkable
class VPBackbone(Backbone, Protocol):
    """A VP diffusion backbone (``prediction`` ``"epsilon"`` or ``"v"``): its discrete schedule."""

    #: float64 ``alphas_cumprod`` of the training schedule, indexed by integer timestep.
    alphas_cumprod: torch.Tensor
    #: ``alpha_bar`` after the last sampling step (diffusers' DDIM ``final_alpha_cumprod``).
    final_alpha_cumprod: float

    def timesteps(self, n_steps: int) -> torch.Tensor:
        """``n_steps`` descending integer timesteps for sampling."""


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
