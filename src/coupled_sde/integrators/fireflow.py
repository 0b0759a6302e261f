"""FireFlow (Deng et al., "FireFlow: Fast Inversion of Rectified Flow for Image Semantic Editing",
ICML 2025, Algorithm 1): the midpoint rule of the probability-flow ODE ``dx/dt = v(t, x)`` whose
first-stage velocity is the previous step's midpoint velocity.

Step ``i``: ``x_h = x_i + (dt/2) v̂_i``, ``v_h = v(t_i + dt/2, x_h)``, ``x_{i+1} = x_i + dt v_h``, and
``v̂_{i+1} = v_h`` is carried to the next step (``v̂_0 = v(t_0, x_0)``). A solve of ``n`` steps costs
``n + 1`` drift evaluations; the order is 2, as for the midpoint rule, because the reused velocity
differs from ``v(t_i, x_i)`` by ``O(dt)`` and enters the step multiplied by ``dt/2``.

The reuse is state carried across the steps of **one** solve. It is kept only while it is valid:
the cache is used when the next step starts from the very state this integrator returned, at the
time it ended, for the same system (the loop creates a new system view per solve); otherwise --
first step of a solve, a callback that replaced the state, another system, another time -- the
velocity is evaluated afresh. So the same integrator object can serve any number of solves, and a
solve's result never depends on an earlier one.
"""

from __future__ import annotations

import math

import torch

from ..drivers import StepNoise
from ..sde import SDE
from ._ode import ODEIntegrator, ode_info

__all__ = ["FireFlow"]


class FireFlow(ODEIntegrator):
    # the ODE order, 2, is measured in tests/test_rf_integrators.py
    info = ode_info("FireFlow", drift_evals_per_step=1, ode_order=2)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the carried velocity (the next step evaluates it)."""
        self._system: SDE | None = None
        self._y: torch.Tensor | None = None
        self._t: float | None = None
        self._v: torch.Tensor | None = None

    def _carried(self, system: SDE, t: float, y: torch.Tensor) -> torch.Tensor | None:
        # t + dt of the last step equals this step's t up to rounding (the grid stores t_{i+1} itself)
        if self._v is not None and system is self._system and y is self._y and math.isclose(t, self._t, rel_tol=1e-12, abs_tol=1e-15):
            return self._v
        return None

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        v = self._carried(system, t, y)
        if v is None:
            v = system.drift(t, y)
        half = 0.5 * dt
        v_half = system.drift(t + half, torch.add(y, v, alpha=half))
        out = noise.land(y, v_half, dt, 0.0)
        self._system, self._y, self._t, self._v = system, out, t + dt, v_half
        return out

    def __repr__(self) -> str:
        return "FireFlow()"
