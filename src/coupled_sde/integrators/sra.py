"""SRA1 (Rößler 2010): strong order 1.5 for additive noise, with the space-time Lévy area.

For ``dY = f(t, Y) dt + g(t) dW`` (``g`` independent of the state, elementwise or a ``(*event, m)``
matrix), with ``ΔW`` and the space-time Lévy area ``H = (1/h) ∫ (W_u − W_t − (u − t)/h ΔW) du`` of the
step (variance ``h/12``; ``I_(1,0)/h = H + ΔW/2``):

``Y₁ = y + ¾ h f(t, y) + 3/2 g(t + h) (H + ΔW/2)``,
``y' = y + h (⅓ f(t, y) + ⅔ f(t + ¾h, Y₁)) + g(t) (ΔW/2 + H) + g(t + h) (ΔW/2 − H)``.

Rößler, "Runge–Kutta methods for the strong approximation of solutions of stochastic differential
equations", SIAM J. Numer. Anal. 48 (2010), Table 5.2 (SRA1). Two drift evaluations per step; as an
ODE method it is order 2 (Ralston-type). The Lévy area comes from the Brownian source
(``space_time_levy_area(s, t)``); with a seed the solver builds an interval source that gives it.
Under a pinned path the off-grid stage carries no noise and the last stage lands on the path.
"""

from __future__ import annotations

import torch

from ..drivers import StepNoise
from ..sde import SDE, Calculus, NoiseType
from .base import Integrator, IntegratorInfo

__all__ = ["SRA1"]


class SRA1(Integrator):
    info = IntegratorInfo(
        name="SRA1",
        strong_order=1.5,
        strong_order_additive=1.5,
        weak_order=2.0,
        calculus=Calculus.ITO,
        noise_types=frozenset({NoiseType.ADDITIVE}),
        drift_evals_per_step=2,
        ode_order=2,
        needs_levy_area=True,
    )

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        t1 = t + dt
        g0, g1 = system.diffusion(t, y), system.diffusion(t1, y)  # additive: the state is not read
        dw0, dw1 = noise.prod(g0), noise.prod(g1)
        dh0, dh1 = noise.prod_h(g0), noise.prod_h(g1)
        f0 = system.drift(t, y)
        stage = torch.add(y, f0, alpha=0.75 * dt)
        if not isinstance(dh1, (int, float)) or dh1 != 0:
            stage = stage + 1.5 * (dh1 + 0.5 * dw1)
        f1 = system.drift(t + 0.75 * dt, stage)
        f = torch.add(f0, f1, alpha=2.0).div_(3.0)
        return noise.land(y, f, dt, 0.5 * (dw0 + dw1) + (dh0 - dh1))
