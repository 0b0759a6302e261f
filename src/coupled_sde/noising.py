"""A schedule's forward noising SDE and its reverse-time SDE as plain :class:`~coupled_sde.sde.SDE` s.

``dX = f(t) X dt + g(t) dW`` with the coefficients of :meth:`coupled_sde.schedules.Schedule.forward_coefficients`
has the schedule's marginals ``N(alpha(t) x0, sigma(t)^2 I)`` given ``x0``. For rectified flow
(Zhang & Scott, §3): ``dX = -X/(1 - sigma) dsigma + sqrt(2 sigma/(1 - sigma)) dW``, and with a velocity
``u ≈ E[eps - x0 | x]`` the reverse-time drift is ``x/(1 - sigma) + 2u`` (Anderson 1982). For coupled
members of a backbone use :class:`coupled_sde.editing.Members`, which uses the same formulas.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedules import RectifiedFlow, Schedule
from .sde import SDE, Calculus, NoiseType

__all__ = ["ForwardNoising", "RectifiedFlowNoising", "RectifiedFlowReverse"]

Tensor = torch.Tensor


class ForwardNoising(SDE):
    """The forward SDE of a continuous schedule."""

    noise_type = NoiseType.ADDITIVE
    calculus = Calculus.ITO

    def __init__(self, schedule: Schedule) -> None:
        if not schedule.continuous:
            raise ValueError(f"{schedule!r} is discrete: it has no continuous-time forward SDE")
        self.schedule = schedule

    def drift(self, t: float, y: Tensor) -> Tensor:
        return y * self.schedule.forward_coefficients(t)[0]

    def diffusion(self, t: float, y: Tensor) -> float:
        return self.schedule.forward_coefficients(t)[1]


class RectifiedFlowNoising(ForwardNoising):
    """Forward noising SDE of the rectified-flow interpolant ``(1 - sigma) x0 + sigma eps``."""

    def __init__(self) -> None:
        super().__init__(RectifiedFlow())


class RectifiedFlowReverse(SDE):
    """The reverse-time SDE (noise ``eta g``; ``eta = 0`` the probability-flow ODE) of rectified flow
    given a velocity ``velocity(x, sigma) -> u``, for decreasing grids."""

    calculus = Calculus.ITO

    def __init__(self, velocity: Callable[[Tensor, float], Tensor], eta: float = 1.0) -> None:
        self.velocity, self.eta, self.schedule = velocity, float(eta), RectifiedFlow()
        self.noise_type = NoiseType.ADDITIVE if self.eta > 0 else None

    def drift(self, t: float, y: Tensor) -> Tensor:
        return self.schedule.reverse_drift(y, self.velocity(y, t), "flow", t, self.eta)

    def diffusion(self, t: float, y: Tensor) -> float:
        return self.schedule.reverse_diffusion(t, self.eta)
