"""Stochastic Heun (the predictor–corrector trapezoidal method), Stratonovich.

``ỹ = y + f(t, y) dt + g(t, y) dW``;
``y' = y + ½ (f(t, y) + f(t + dt, ỹ)) dt + ½ (g(t, y) + g(t + dt, ỹ)) dW``.

Strong order 1 for commutative noise (additive, scalar, diagonal), weak order 1; with g = 0 it is
Heun's method (order 2). Two drift evaluations per step. For additive noise Itô and Stratonovich
coincide, which is the case of every diffusion model's reverse SDE.
"""

from __future__ import annotations

import torch

from ..drivers import StepNoise
from ..sde import SDE, Calculus, NoiseType
from .base import Integrator, IntegratorInfo

__all__ = ["Heun"]


class Heun(Integrator):
    info = IntegratorInfo(
        name="Heun",
        strong_order=1.0,
        strong_order_additive=1.0,
        weak_order=1.0,
        ode_order=2,
        calculus=Calculus.STRATONOVICH,
        noise_types=frozenset({NoiseType.ADDITIVE, NoiseType.SCALAR, NoiseType.DIAGONAL}),
        drift_evals_per_step=2,
    )

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        f0 = system.drift(t, y)
        y_pred = noise.advance(t, dt, y, f0)
        f1 = system.drift(t + dt, y_pred)
        return noise.advance_trapezoidal(t, dt, y, y_pred, torch.add(f0, f1).mul_(0.5))
