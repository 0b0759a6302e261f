"""ODE inversion: integrate the probability-flow ODE ``dx/dsigma = u`` forward under the source
prompt from the data to ``sigma_{i0}``, then backward under the target prompt. Deterministic; exact
reconstruction only in the limit of small steps (the inversion error of Euler/Heun)."""

from __future__ import annotations

import torch

from ..backends.base import Condition
from ..grid import TimeGrid
from ..integrators import Integrator
from ..solve import solve
from .common import EditResult, Timer, as_condition, schedule, start_grid
from .members import FlowMembers
from .sync_sde import _as_latents, _mask

__all__ = ["ode_inversion"]


def ode_inversion(
    backbone: object,
    x_src: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int = 28,
    start: int = 4,
    integrator: Integrator | str = "euler",
    mask: torch.Tensor | None = None,
    sigmas: torch.Tensor | None = None,
    progress: bool = False,
) -> EditResult:
    """Invert ``x_src`` under ``source`` to ``sigma_{i0}`` and regenerate under ``target``.

    With a ``mask``, the regeneration carries a source member beside the target (one batched call)
    and blends their drifts, so the source's reconstruction is kept outside the mask.
    """
    x_src = _as_latents(x_src)
    src, tgt = as_condition(source), as_condition(target)
    grid = start_grid(schedule(backbone, n_steps, x_src.shape[1:], sigmas), start)
    with Timer() as timer:
        up = FlowMembers(backbone, backbone.encode_conditions([src]), 1, "ode")
        z = solve(up, x_src.unsqueeze(0), TimeGrid(grid.times.flip(0)), integrator, progress=progress).y
        if mask is None:
            down = FlowMembers(backbone, backbone.encode_conditions([tgt]), 1, "ode")
            out = solve(down, z, grid, integrator, progress=progress).y[0]
            evals = up.model_calls + down.model_calls
        else:
            down = FlowMembers(backbone, backbone.encode_conditions([src, tgt]), 2, "ode", _mask(mask, x_src), reference=0)
            out = solve(down, torch.cat([z, z]), grid, integrator, progress=progress).y[1]
            evals = up.model_calls + 2 * down.model_calls
    settings = dict(n_steps=n_steps, start=start, t0=grid[0], integrator=str(integrator), masked=mask is not None)
    return EditResult(out, "ode-inversion", settings, up.model_calls + down.model_calls, evals, timer.seconds)
