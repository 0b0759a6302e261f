"""The base of integrators defined for ODEs only (``g = 0``): RF-Solver and FireFlow."""

from __future__ import annotations

from ..sde import SDE
from .base import Integrator

__all__ = ["ODEIntegrator"]


class ODEIntegrator(Integrator):
    """An integrator of ``dx/dt = f(t, x)``; a system with a diffusion is refused before any call."""

    def check(self, system: SDE) -> None:
        if system.noise_type is not None:
            raise ValueError(
                f"{self.info.name} integrates ODEs (probability-flow ODEs, g = 0); this system has "
                f"{system.noise_type.value} noise: use 'euler', 'heun' or 'milstein' for SDEs"
            )
