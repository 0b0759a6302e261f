"""The base of integrators defined for ODEs only (``g = 0``): RF-Solver and FireFlow."""

from __future__ import annotations

from ..sde import SDE, Calculus
from .base import Integrator, IntegratorInfo

__all__ = ["ODEIntegrator", "ode_info"]


def ode_info(name: str, drift_evals_per_step: int, ode_order: int) -> IntegratorInfo:
    """What an ODE-only integrator declares: no SDE orders (0 = not applicable), no noise types."""
    return IntegratorInfo(
        name=name,
        strong_order=0.0,
        strong_order_additive=0.0,
        weak_order=0.0,
        calculus=Calculus.ITO,
        noise_types=frozenset(),
        drift_evals_per_step=drift_evals_per_step,
        ode_order=ode_order,
    )


class ODEIntegrator(Integrator):
    """An integrator of ``dx/dt = f(t, x)``; a system with a diffusion is refused before any call."""

    def check(self, system: SDE) -> None:
        if system.noise_type is not None:
            raise ValueError(
                f"{self.info.name} integrates ODEs (probability-flow ODEs, g = 0); this system has "
                f"{system.noise_type.value} noise: use 'euler', 'heun' or 'milstein' for SDEs"
            )
