"""RF-Solver (Wang et al., "Taming Rectified Flow for Inversion and Editing", 2024, eq. 8): a
second-order Taylor step of the probability-flow ODE ``dx/dt = v(t, x)``.

``x' = x + dt v(t, x) + ½ dt² ∂_t v``, where the total time derivative ``∂_t v`` is estimated by a
finite difference through an Euler half-step: ``x_h = x + (dt/2) v(t, x)``,
``∂_t v ≈ (v(t + dt/2, x_h) − v(t, x)) / (dt/2)``. Two drift evaluations per step, ODE order 2.
(Algebraically the update equals the explicit midpoint rule ``x + dt v(t + dt/2, x_h)``; the
published Taylor form is kept so that the arithmetic follows the paper's.)

An ODE integrator (``g = 0``): "ODE inversion with integrator ``rf-solver``" is RF-Solver's editing
method. Stochastic systems are refused with a clear error.
"""

from __future__ import annotations

import torch

from ..drivers import StepNoise
from ..sde import SDE
from ._ode import ODEIntegrator, ode_info

__all__ = ["RFSolver"]


class RFSolver(ODEIntegrator):
    # the ODE order, 2, is measured in tests/test_rf_integrators.py
    info = ode_info("RFSolver", drift_evals_per_step=2, ode_order=2)

    def step(self, system: SDE, t: float, dt: float, y: torch.Tensor, noise: StepNoise) -> torch.Tensor:
        half = 0.5 * dt
        v = system.drift(t, y)
        v_half = system.drift(t + half, torch.add(y, v, alpha=half))
        dv_dt = (v_half - v).div_(half)
        # x' = x + dt (v + ½ dt ∂_t v): the drift part handed to the (noise-free) step
        return noise.land(y, dv_dt.mul_(half).add_(v), dt, 0.0)
