"""Stochastic Heun (the predictor–corrector trapezoidal method), Stratonovich.

``ỹ = y + f(t, y) dt + g(t, y) ΔW``;
``y' = y + ½ (f(t, y) + f(t + dt, ỹ)) dt + ½ (g(t, y) + g(t + dt, ỹ)) ΔW``.

The corrector averages the diffusion at both ends *also for additive noise*: with ``g = g(t)`` the
noise term is ``½ (g(t) + g(t + dt)) ΔW`` (a one-step check: f = 0, g = t, ΔW = 1 on [0, 1] gives
0.5). Strong order 1 for commutative noise (additive, scalar, diagonal), weak order 1; with g = 0 it
is Heun's method (order 2). Two drift evaluations per step. For additive noise Itô and Stratonovich
coincide, which is the case of every diffusion model's reverse SDE.

Embedded error estimate (adaptive steps): the predictor is the Euler–Maruyama step, so
``y' - ỹ = ½ (f(t + dt, ỹ) - f(t, y)) dt + ½ (g(t + dt, ỹ) - g(t, y)) ΔW`` costs nothing extra
(the Heun–Euler pair diffrax also uses for SDEs).
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
        calculus=Calculus.STRATONOVICH,
        noise_types=frozenset({NoiseType.ADDITIVE, NoiseType.SCALAR, NoiseType.DIAGONAL}),
        drift_evals_per_step=2,
        ode_order=2,
        embedded=True,
    )

    def step_with_error(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise):
        f0, n0 = system.drift(t, y), noise.g_dw(t, y)
        y_pred = noise.land(y, f0, dt, n0)
        t1 = t + dt
        f1, n1 = system.drift(t1, y_pred), noise.g_dw(t1, y_pred)
        y1 = noise.land(y, torch.add(f0, f1).mul_(0.5), dt, 0.5 * (n0 + n1))
        return y1, y1 - y_pred

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        return self.step_with_error(system, t, dt, y, noise)[0]
