"""The forward noising SDEs of generative models, and their reverse drifts from model predictions.

Rectified flow (``shared/spec/method.md`` §3), noise level ``sigma`` in [0, 1]:
``dX = -X / (1 - sigma) dsigma + sqrt(2 sigma / (1 - sigma)) dW`` has law ``N((1 - sigma) x0, sigma^2 I)``
given ``x0`` -- the interpolant's marginals -- and with a velocity prediction ``u ≈ E[eps - x0 | x]``
the score is ``-(x + (1 - sigma) u) / sigma``, so the reverse-time drift (in the forward variable) is
``x / (1 - sigma) + 2 u``. Integrated on a decreasing grid this is the paper's
``x' = x + b Δ + g ξ sqrt(Δ)`` with ``b = -2u - x / (1 - sigma)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .sde import SDE, Calculus, NoiseType

__all__ = ["RectifiedFlowNoising", "RectifiedFlowReverse", "RectifiedFlowODE"]

Tensor = torch.Tensor
#: ``velocity(x, sigma) -> u`` with ``u ≈ E[eps - x0 | x_sigma = x]``.
Velocity = Callable[[Tensor, float], Tensor]


def _check_sigma(sigma: float) -> None:
    if not 0.0 <= sigma < 1.0:
        raise ValueError(
            f"noise level sigma={sigma!r} is outside [0, 1): the rectified-flow SDE divides by (1 - sigma); "
            "start below sigma = 1 (a start index >= 1 on a schedule that begins at 1)"
        )


class RectifiedFlowNoising(SDE):
    """Forward noising SDE of the rectified-flow interpolant ``(1 - sigma) x0 + sigma eps``."""

    noise_type = NoiseType.ADDITIVE
    calculus = Calculus.ITO

    def drift(self, t: float, y: Tensor) -> Tensor:
        _check_sigma(t)
        return y * (-1.0 / (1.0 - t))

    def diffusion(self, t: float, y: Tensor) -> float:
        _check_sigma(t)
        return math.sqrt(2.0 * t / (1.0 - t))

    @staticmethod
    def midpoint_path_scale(s: float, s_next: float) -> float:
        """The reference implementation's per-step scale ``m_k = sqrt(2 s)/(1 - s)^1.5 sqrt(Δ)`` at the
        midpoint ``s = (σ_k + σ_{k+1}) / 2`` of the ``B`` process (``X = (1 - σ)(x0 + B)``)."""
        mid = 0.5 * (s + s_next)
        _check_sigma(mid)
        return math.sqrt(2.0 * mid) / (1.0 - mid) ** 1.5 * math.sqrt(abs(s - s_next))

    @staticmethod
    def exact_path_scale(s: float, s_next: float) -> float:
        """Exact standard deviation of ``B_σ - B_σ'``: ``Var B_σ = (σ / (1 - σ))^2`` (infinite at σ = 1)."""
        _check_sigma(max(s, s_next))
        a, b = s / (1.0 - s), s_next / (1.0 - s_next)
        return math.sqrt(abs(a * a - b * b))


class RectifiedFlowReverse(SDE):
    """The reverse-time SDE of :class:`RectifiedFlowNoising` given a velocity, for decreasing grids.

    ``velocity`` maps ``(x, sigma)`` to ``u``; for coupled systems use the member-stacked form in
    :mod:`coupled_sde.editing`.
    """

    noise_type = NoiseType.ADDITIVE
    calculus = Calculus.ITO

    def __init__(self, velocity: Velocity) -> None:
        self.velocity = velocity

    def drift(self, t: float, y: Tensor) -> Tensor:
        _check_sigma(t)
        return y * (1.0 / (1.0 - t)) + 2.0 * self.velocity(y, t)

    def diffusion(self, t: float, y: Tensor) -> float:
        _check_sigma(t)
        return math.sqrt(2.0 * t / (1.0 - t))


class RectifiedFlowODE(SDE):
    """The probability-flow ODE ``dx/dsigma = u`` (either direction: inversion and sampling)."""

    noise_type = None

    def __init__(self, velocity: Velocity) -> None:
        self.velocity = velocity

    def drift(self, t: float, y: Tensor) -> Tensor:
        return self.velocity(y, t)
