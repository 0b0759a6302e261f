"""coupled_sde: coupled stochastic differential equations in PyTorch, and sync-SDE image editing.

The core is one idea: K stochastic processes stepped in lockstep on one time grid, each drift
evaluated by one batched call, each member's noise derived from one Brownian source through a
coupling. Samplers, sync-SDE, SDEdit, FlowEdit, ODE inversion and convergence studies are
configurations of :func:`solve`.

Importing the package loads the core only; the editing layer (and PIL, through it) is imported on
first use of :func:`edit_image` or :mod:`coupled_sde.editing`.
"""

from typing import Any

from .adaptive import PIController
from .brownian import BrownianSource, GridBrownian, IntervalBrownian, RecordedBrownian
from .brownian_tree import BrownianTree
from .coupling import Correlated, Coupling, Independent, Reflection, Synchronous
from .drivers import BrownianDriver, PathDriver
from .errors import MissingDependencyError, NonFiniteError
from .grid import TimeGrid
from .integrators import SRA1, Euler, EulerMaruyama, Heun, Integrator, Milstein, ReversibleHeun
from .reversal import ReverseSDE, backward_increments
from .sde import ODE, SDE, Calculus, CoupledSDE, FunctionSDE, LinearSDE, NoiseType
from .solve import Solution, solve

__version__ = "0.1.0"

__all__ = [
    "BrownianDriver",
    "BrownianSource",
    "BrownianTree",
    "Calculus",
    "Correlated",
    "Coupling",
    "CoupledSDE",
    "Euler",
    "EulerMaruyama",
    "FunctionSDE",
    "GridBrownian",
    "Heun",
    "Independent",
    "Integrator",
    "IntervalBrownian",
    "LinearSDE",
    "Milstein",
    "MissingDependencyError",
    "NoiseType",
    "NonFiniteError",
    "ODE",
    "PathDriver",
    "PIController",
    "RecordedBrownian",
    "Reflection",
    "ReverseSDE",
    "ReversibleHeun",
    "SRA1",
    "SDE",
    "Solution",
    "Synchronous",
    "TimeGrid",
    "backward_increments",
    "edit_image",
    "solve",
]


def __getattr__(name: str) -> Any:
    """Lazy attributes (PEP 562): the editing facade is imported on first use."""
    if name == "edit_image":
        from .editing.api import edit_image

        return edit_image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
