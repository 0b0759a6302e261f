"""Milstein's method (Milstein 1974) for diagonal Itô noise.

``y' = y + f dt + g dW + ½ g ∂g/∂y (dW² − |dt|)``, elementwise. Strong order 1 (against 1/2 for
Euler–Maruyama on multiplicative noise), weak order 1. ``∂g/∂y`` of a diagonal diffusion is
computed by one forward-mode JVP with a tangent of ones (exact because ``g_i`` depends on ``y_i``
only); pass ``diffusion_derivative`` to avoid autograd. For additive noise it is Euler–Maruyama.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..drivers import BrownianStepNoise, StepNoise
from ..sde import SDE, Calculus, NoiseType
from .base import Integrator, IntegratorInfo

__all__ = ["Milstein"]


class Milstein(Integrator):
    info = IntegratorInfo(
        name="Milstein",
        strong_order=1.0,
        strong_order_additive=1.0,
        weak_order=1.0,
        ode_order=1,
        calculus=Calculus.ITO,
        noise_types=frozenset({NoiseType.ADDITIVE, NoiseType.DIAGONAL}),
        drift_evals_per_step=1,
    )

    def __init__(self, diffusion_derivative: Callable[[float, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.diffusion_derivative = diffusion_derivative

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        f = system.drift(t, y)
        out = noise.advance(t, dt, y, f)
        if system.noise_type is NoiseType.ADDITIVE or system.noise_type is None:
            return out
        if not isinstance(noise, BrownianStepNoise):
            raise ValueError("Milstein needs Brownian increments (it is not defined for pinned-path drivers)")
        if self.diffusion_derivative is not None:
            g, dg = system.diffusion(t, y), self.diffusion_derivative(t, y)
        else:
            g, dg = torch.func.jvp(lambda z: system.diffusion(t, z), (y,), (torch.ones_like(y),))
        dw = noise.dw
        return out.add_(0.5 * g * dg * (dw * dw - abs(dt)))
