"""Integrators, one module each; every one declares its orders, calculus and noise types."""

from .base import Integrator, IntegratorInfo
from .euler_maruyama import Euler, EulerMaruyama
from .fireflow import FireFlow
from .heun import Heun
from .milstein import Milstein
from .reversible_heun import ReversibleHeun
from .rf_solver import RFSolver
from .sra import SRA1

__all__ = [
    "Integrator",
    "IntegratorInfo",
    "Euler",
    "EulerMaruyama",
    "Heun",
    "Milstein",
    "SRA1",
    "ReversibleHeun",
    "RFSolver",
    "FireFlow",
    "resolve_integrator",
]

_NAMES = {
    "euler": EulerMaruyama,
    "euler_maruyama": EulerMaruyama,
    "em": EulerMaruyama,
    "heun": Heun,
    "milstein": Milstein,
    "sra1": SRA1,
    "reversible_heun": ReversibleHeun,
    "rf-solver": RFSolver,  # ODE integrators (probability-flow ODEs): RF-Solver and FireFlow
    "rf_solver": RFSolver,
    "fireflow": FireFlow,
}


def resolve_integrator(integrator: Integrator | str | None) -> Integrator:
    """An integrator object from itself or a name (``"euler"``, ``"heun"``, ``"milstein"``, ``"sra1"``,
    ``"reversible_heun"``; for ODEs also ``"rf-solver"``, ``"fireflow"``)."""
    if integrator is None:
        return EulerMaruyama()
    if isinstance(integrator, Integrator):
        return integrator
    try:
        return _NAMES[str(integrator).lower()]()
    except KeyError:
        raise ValueError(f"unknown integrator {integrator!r}; choose one of {sorted(_NAMES)}") from None
