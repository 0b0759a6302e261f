"""SDEdit (Meng et al., ICLR 2022) on rectified flow: noise the source to ``sigma_{i0}`` with a fresh
draw, then sample the target's reverse SDE with fresh (independent) noise. The baseline that sync-SDE
improves on: the target has the right law but forgets the source's details."""

from __future__ import annotations

import torch

from ..backends.base import Condition
from ..brownian import GridBrownian
from ..grid import TimeGrid
from ..integrators import Integrator
from ..solve import solve
from .common import EditResult, Seeds, Timer, as_condition, derive_seeds, schedule, start_grid
from .members import FlowMembers
from .sync_sde import _as_latents

__all__ = ["sdedit"]


def sdedit(
    backbone: object,
    x_src: torch.Tensor,
    target: Condition | str | int | None,
    *,
    n_steps: int = 28,
    start: int = 4,
    integrator: Integrator | str = "euler",
    seed: Seeds = 0,
    sigmas: torch.Tensor | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit ``x_src`` ``(B, *latent)`` towards ``target`` with SDEdit (one member, fresh noise)."""
    x_src = _as_latents(x_src)
    grid = start_grid(schedule(backbone, n_steps, x_src.shape[1:], sigmas), start)
    with Timer() as timer:
        eps = GridBrownian(TimeGrid([0.0, 1.0]), x_src.shape[0], tuple(x_src.shape[1:]), seed=derive_seeds(seed, 2)).normals(
            0, 1
        )[0, :, 0]
        x_t = (1.0 - grid[0]) * x_src + grid[0] * eps.to(x_src)
        system = FlowMembers(backbone, backbone.encode_conditions([as_condition(target)]), 1, "sde")
        sol = solve(system, x_t.unsqueeze(0), grid, integrator, noise=seed, progress=progress)
    settings = dict(n_steps=n_steps, start=start, t0=grid[0], integrator=str(integrator))
    return EditResult(sol.y[0], "sdedit", settings, system.model_calls, system.model_calls, timer.seconds)
