"""Euler–Maruyama (Maruyama 1955): ``y' = y + f(t, y) dt + g(t, y) dW``.

Itô; strong order 1/2 (1 for additive noise), weak order 1; with g = 0 it is the explicit Euler
method (order 1). One drift evaluation per step.
"""

from __future__ import annotations

import torch

from ..drivers import StepNoise
from ..sde import SDE, Calculus, NoiseType
from .base import Integrator, IntegratorInfo

__all__ = ["EulerMaruyama", "Euler"]


class EulerMaruyama(Integrator):
    info = IntegratorInfo(
        name="EulerMaruyama",
        strong_order=0.5,
        strong_order_additive=1.0,
        weak_order=1.0,
        calculus=Calculus.ITO,
        noise_types=frozenset(NoiseType),
        drift_evals_per_step=1,
        ode_order=1,
    )

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        return noise.advance(t, dt, y, system.drift(t, y))  # = land(y, f, dt, g_dw(t, y)), fused where it can be


#: The deterministic counterpart: the same step with g = 0.
Euler = EulerMaruyama
