"""The reversible Heun method (Kidger, Foster, Li, Lyons 2021, "Efficient and accurate gradients for
neural SDEs", NeurIPS; Algorithm 1), Stratonovich.

It carries a second state ``z`` (``z₀ = y₀``) and the drift and diffusion at ``z``:

``z' = 2y − z + f(t, z) dt + g(t, z) ΔW``,
``y' = y + ½ (f(t, z) + f(t + dt, z')) dt + ½ (g(t, z) + g(t + dt, z')) ΔW``.

The step is algebraically reversible: ``z = 2y' − z' − f(t + dt, z') dt − g(t + dt, z') ΔW`` and then
``y = y' − ½ (f(t, z) + f(t + dt, z')) dt − ½ (g(t, z) + g(t + dt, z')) ΔW``. So the backward pass
reconstructs every state from the last one and the (re-queried) Brownian increments, and
backpropagates one step at a time: the gradients of the discretised solve with O(1) memory in the
number of steps (``solve(..., adjoint=True)``, :mod:`coupled_sde.adjoint`). One drift evaluation per
step (the one at ``z'`` is reused by the next step); strong order 1/2 in general, 1 for additive noise.
"""

from __future__ import annotations

import torch

from ..drivers import StepNoise
from ..sde import SDE, Calculus, NoiseType
from .base import Integrator, IntegratorInfo

__all__ = ["ReversibleHeun"]


class ReversibleHeun(Integrator):
    info = IntegratorInfo(
        name="ReversibleHeun",
        strong_order=0.5,
        strong_order_additive=1.0,
        weak_order=1.0,
        calculus=Calculus.STRATONOVICH,
        noise_types=frozenset({NoiseType.ADDITIVE, NoiseType.SCALAR, NoiseType.DIAGONAL, NoiseType.GENERAL}),
        drift_evals_per_step=1,
        ode_order=2,
    )
    #: carries ``(z, f(t, z), g(t, z))`` from step to step
    stateful = True

    def init_extra(self, system: SDE, t: float, y: torch.Tensor) -> tuple:
        return (y, system.drift(t, y), _diffusion(system, t, y))

    def step_extra(self, system: SDE, t: float, dt: float, y: torch.Tensor, extra: tuple, noise: StepNoise):
        z, fz, gz = extra
        t1 = t + dt
        z1 = noise.land(torch.sub(y, z).add_(y), fz, dt, noise.prod(gz))
        f1, g1 = system.drift(t1, z1), _diffusion(system, t1, z1)
        y1 = noise.land(y, torch.add(fz, f1).mul_(0.5), dt, noise.prod(0.5 * (gz + g1)))
        return y1, (z1, f1, g1)

    def unstep(self, system: SDE, t: float, dt: float, y1: torch.Tensor, extra1: tuple, noise: StepNoise):
        """The exact algebraic inverse of :meth:`step_extra` (Brownian noise only)."""
        z1, f1, g1 = extra1
        t0 = t
        z0 = (2 * y1 - z1) - f1 * dt - noise.prod(g1)
        f0, g0 = system.drift(t0, z0), _diffusion(system, t0, z0)
        y0 = y1 - 0.5 * (f0 + f1) * dt - noise.prod(0.5 * (g0 + g1))
        return y0, (z0, f0, g0)

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        raise TypeError("ReversibleHeun carries a second state: run it through coupled_sde.solve")


def _diffusion(system: SDE, t: float, y: torch.Tensor):
    return 0.0 if system.noise_type is None else system.diffusion(t, y)
