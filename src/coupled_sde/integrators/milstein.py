"""Milstein's method (Milstein 1974) for diagonal and scalar Itô noise.

``y' = y + f dt + g ΔW + ½ (L g) (ΔW² − |dt|)`` with ``L g = (∂g/∂y) g``, the derivative of the
diffusion along itself (elementwise ``g ∂g_i/∂y_i`` for diagonal noise; the directional derivative
for scalar noise, one Brownian motion per sample). Strong order 1 (against 1/2 for Euler–Maruyama
on multiplicative noise), weak order 1; for additive noise (elementwise or a ``(d, m)`` matrix) the
correction vanishes and it is Euler–Maruyama.

``L g`` is computed, by default, *derivative-free* (Kloeden & Platen 1992, §11.1):
``(g(t, y + g sqrt|dt|) − g(t, y)) / sqrt|dt|``, one more diffusion evaluation and no autograd, still
strong order 1. ``derivative="jvp"`` uses one forward-mode JVP along ``g`` instead (exact), and
``diffusion_derivative(t, y) -> ∂g_i/∂y_i`` (diagonal noise) avoids both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..drivers import StepNoise
from ..sde import SDE, Calculus, NoiseType
from .base import Integrator, IntegratorInfo

__all__ = ["Milstein"]


class Milstein(Integrator):
    info = IntegratorInfo(
        name="Milstein",
        strong_order=1.0,
        strong_order_additive=1.0,
        weak_order=1.0,
        calculus=Calculus.ITO,
        noise_types=frozenset({NoiseType.ADDITIVE, NoiseType.DIAGONAL, NoiseType.SCALAR}),
        drift_evals_per_step=1,
        ode_order=1,
    )

    def __init__(
        self,
        diffusion_derivative: Callable[[float, torch.Tensor], torch.Tensor] | None = None,
        derivative: str = "free",
    ) -> None:
        if derivative not in ("free", "jvp"):
            raise ValueError(f"derivative must be 'free' or 'jvp', got {derivative!r}")
        self.diffusion_derivative, self.derivative = diffusion_derivative, derivative

    def _lg(self, system: SDE, t: float, dt: float, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.diffusion_derivative is not None:
            return g * self.diffusion_derivative(t, y)
        if self.derivative == "jvp":
            return torch.func.jvp(lambda z: system.diffusion(t, z), (y,), (torch.broadcast_to(g, y.shape),))[1]
        r = abs(dt) ** 0.5
        return (system.diffusion(t, y + g * r) - g) / r

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        f = system.drift(t, y)
        if system.noise_type is NoiseType.ADDITIVE or noise.dw is None:
            return noise.land(y, f, dt, noise.g_dw(t, y))
        g = system.diffusion(t, y)
        if isinstance(g, (int, float)):
            g = torch.full_like(y, float(g))
        dw = noise.dw
        if system.noise_type is NoiseType.SCALAR:
            dw = dw.reshape(dw.shape + (1,) * (y.dim() - 1))
        term = noise.prod(g) + 0.5 * self._lg(system, t, dt, y, g) * (dw * dw - abs(dt))
        return noise.land(y, f, dt, term)

    def __repr__(self) -> str:
        return f"Milstein(derivative={self.derivative!r})"
