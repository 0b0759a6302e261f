"""Integrators, one module each; every one declares its orders, calculus and noise types."""

from .base import Integrator, IntegratorInfo
from .euler_maruyama import Euler, EulerMaruyama
from .fireflow import FireFlow
from .heun import Heun
from .milstein import Milstein
from .rf_solver import RFSolver

__all__ = ["Integrator", "IntegratorInfo", "Euler", "EulerMaruyama", "Heun", "Milstein", "RFSolver", "FireFlow", "resolve_integrator"]


def resolve_integrator(integrator: Integrator | str | None) -> Integrator:
    """An integrator object from itself or a name (``"euler"``, ``"heun"``, ``"milstein"``)."""
    if integrator is None:
        return EulerMaruyama()
    if isinstance(integrator, Integrator):
        return integrator
    names = {"euler": EulerMaruyama, "euler_maruyama": EulerMaruyama, "em": EulerMaruyama, "heun": Heun, "milstein": Milstein}
    names.update({"rf-solver": RFSolver, "rf_solver": RFSolver, "fireflow": FireFlow})
    try:
        return names[str(integrator).lower()]()
    except KeyError:
        raise ValueError(f"unknown integrator {integrator!r}; choose one of {sorted(names)}") from None
