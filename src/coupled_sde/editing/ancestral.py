"""The DDIM/DDPM step as an integrator (Song, Meng & Ermon, ICLR 2021, eq. 12; Ho et al. 2020).

For a system whose drift returns the noise prediction ``eps`` (a
:class:`~coupled_sde.editing.members.Members` built for this integrator), one step from ``t`` to
``t + dt`` is ``x' = p x + q eps + s z`` with the schedule's
:meth:`~coupled_sde.schedules.Schedule.ddim_coefficients`: exact for a discrete VP schedule (the
strided DDPM posterior step at ``eta = 1``, deterministic DDIM at ``eta = 0``), and on rectified
flow with ``eta = 0`` the Euler step ``x + dt u``. The model is evaluated at the step's *noisier*
end: ``t`` when sampling, ``t + dt`` when inverting (as diffusers' ``DDIMInverseScheduler``), so the
data point is never given to the network. Coefficients come from the two times, never from a grid
index: any grid of the schedule's points works.

Noise: with Brownian increments ``dW`` (variance ``|dt|``) the step adds ``s dW / sqrt|dt|``; under
a pinned path (:class:`~coupled_sde.drivers.PathDriver`) the drift part ``(p - 1) x + q eps`` is
handed to the driver, which lands the reference member on its path and gives the others the
increment it implies (``n = x^src' - mu(x^src)``: the discrete sync-SDE of Zhang & Scott §4).
"""

from __future__ import annotations

import math

import torch

from ..drivers import StepNoise
from ..integrators.base import Integrator, IntegratorInfo
from ..schedules import Schedule
from ..sde import SDE, Calculus, NoiseType

__all__ = ["Ancestral"]


class Ancestral(Integrator):
    """DDIM with noise scale ``eta`` (``eta = 1``: DDPM ancestral sampling) on ``schedule``'s points."""

    NAMES = ("ddim", "ddpm", "ancestral")
    info = IntegratorInfo(
        name="DDIM",
        strong_order=0.5,
        strong_order_additive=1.0,
        weak_order=1.0,
        ode_order=1,
        calculus=Calculus.ITO,
        noise_types=frozenset({NoiseType.ADDITIVE}),
        drift_evals_per_step=1,
    )

    def __init__(self, schedule: Schedule, eta: float = 1.0) -> None:
        self.schedule, self.eta = schedule, float(eta)

    def __repr__(self) -> str:
        return f"Ancestral(eta={self.eta:g})"

    __str__ = lambda self: "ddim"  # noqa: E731  (the name settings report)

    def check(self, system: SDE) -> None:
        if not getattr(system, "epsilon_output", False) or getattr(system, "schedule", None) is not self.schedule:
            raise ValueError("the DDIM/DDPM integrator steps Members built for it (Members(..., integrator=this))")
        if getattr(system, "eta", self.eta) != self.eta:
            raise ValueError(f"the members use eta={system.eta} but the integrator eta={self.eta}")

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        t_next = t + dt
        decreasing = dt < 0
        eta = self.eta if decreasing else 0.0  # inversion is deterministic
        eps = system.drift(t if decreasing else t_next, y)
        p, q, s = self.schedule.ddim_coefficients(t, t_next, eta)
        f = torch.add(y * (p - 1.0), eps, alpha=q).mul_(1.0 / dt)  # (mu - x) / dt
        dw = noise.dw
        if dw is None or s == 0.0:  # no noise, or a pinned path that brings its own increment
            return noise.advance(t, dt, y, f)
        return torch.add(y, f, alpha=dt).add_(dw, alpha=s / math.sqrt(abs(dt)))
