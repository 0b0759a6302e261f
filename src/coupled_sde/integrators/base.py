"""What every integrator declares, and the check that a system suits it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..drivers import StepNoise
from ..sde import SDE, Calculus, NoiseType

__all__ = ["Integrator", "IntegratorInfo"]


@dataclass(frozen=True)
class IntegratorInfo:
    """Declared properties. Orders are for the noise types listed; ``strong_order_additive`` applies
    when ``g`` does not depend on the state (then Itô and Stratonovich coincide). The tests measure
    every declared order on closed forms (``tests/test_integrators.py``).

    ``embedded``: the method gives an embedded error estimate (:meth:`Integrator.step_with_error`)
    and so supports adaptive steps; ``needs_levy_area``: it uses the step's space-time Lévy area.
    """

    name: str
    strong_order: float
    strong_order_additive: float
    weak_order: float
    calculus: Calculus
    noise_types: frozenset[NoiseType]
    drift_evals_per_step: int
    #: order as a deterministic method (g = 0), measured in ``tests/test_integrators.py``
    ode_order: int = 1
    embedded: bool = False
    needs_levy_area: bool = False


class Integrator:
    """A one-step method: ``step(system, t, dt, y, noise) -> y_next``, pure (no state kept).

    ``y`` is the *flat* state ``(K * B, *event)`` of all members (member-major, see
    :mod:`coupled_sde.drivers`), so a coupled system steps every member in lockstep and each drift
    evaluation is one batched call. Methods are written against the stage primitive of
    :class:`~coupled_sde.drivers.StepNoise` (``g_dw``/``prod`` and ``land``).
    """

    info: IntegratorInfo

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        raise NotImplementedError

    def step_with_error(
        self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_next, error estimate)`` for adaptive steps (methods with ``info.embedded``)."""
        raise ValueError(f"{self.info.name} has no embedded error estimate; adaptive steps need e.g. 'heun'")

    def check(self, system: SDE) -> None:
        """Raise a clear error when the system's noise type or calculus does not suit this method."""
        nt = system.noise_type
        if nt is None:
            return
        if nt not in self.info.noise_types:
            raise ValueError(
                f"{self.info.name} does not support {nt.value} noise (supported: "
                f"{sorted(n.value for n in self.info.noise_types)})"
            )
        if nt is not NoiseType.ADDITIVE and system.calculus is not self.info.calculus:
            other = "Heun" if self.info.calculus is Calculus.ITO else "EulerMaruyama or Milstein"
            raise ValueError(
                f"{self.info.name} converges to the {self.info.calculus.value} solution but the system is "
                f"{system.calculus.value}; use {other}, or rewrite the drift for the other calculus"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
