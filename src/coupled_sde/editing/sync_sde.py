"""sync-SDE (Zhang & Scott, "Semantic Editing with Coupled Stochastic Differential Equations",
ICML 2026): the target process is the reverse-time SDE under the target prompt, driven by the
backward Brownian increments of the source's own forward noising path.

As a configuration of the core, for every backbone (any :class:`~coupled_sde.schedules.Schedule`):

1. the forward noising path of the source on the grid ``t_{i0} > ... > t_N`` (data), drawn by the
   schedule (:meth:`~coupled_sde.schedules.Schedule.forward_path`: the reference code's midpoint
   rule or exact transitions on rectified flow, exact Markov transitions on VP), or given (``path=``);
2. two members ``[source, target]`` of the backbone's reverse SDE (noise scale ``eta``), evaluated
   in one batched model call per stage (:class:`~coupled_sde.editing.members.Members`);
3. the :class:`~coupled_sde.drivers.PathDriver` pins the source member to that path and drives the
   target by the increments the path implies, for whichever integrator (Euler–Maruyama, Heun, DDIM/DDPM);
   with the synchronous coupling this is the paper's update ``D <- D + (b_tgt(X + D) - b_src(X)) Δ``
   (§3), and on a VP model the discrete ``y_{t-1} = mu(y_t, c_tgt) + x^src_{t-1} - mu(x^src_t, c_src)`` (§4).

Identical conditions return the source latent exactly, at any step count and for every integrator.
"""

from __future__ import annotations

from typing import Any

import torch

from ..backends.base import Condition
from ..coupling import Coupling
from ..drivers import PathDriver
from ..solve import solve
from .common import EditResult, Noise, Timer, begin, derive_seeds, is_seed, normals
from .members import Members
from .registry import ETA, INTEGRATOR, START, STEPS, Setting, register_method

__all__ = ["sync_sde", "forward_path"]


def forward_path(x0: torch.Tensor, grid: Any, noise: Noise = 0, rule: str | None = None, schedule: Any = None) -> torch.Tensor:
    """The source's forward noising path ``(M + 1, B, *latent)`` on a decreasing grid ending at the data.

    ``noise`` gives the standard normal of each step (see :func:`~coupled_sde.editing.common.normals`);
    ``schedule`` defaults to rectified flow (``rule`` ``"midpoint"``, the reference code's, or ``"exact"``).
    """
    from ..grid import TimeGrid
    from ..schedules import RectifiedFlow

    g = grid if isinstance(grid, TimeGrid) else TimeGrid(grid)
    schedule = schedule if schedule is not None else RectifiedFlow()
    return schedule.forward_path(x0, g, normals(noise, g, x0)[0], rule or schedule.default_path_rule)


@register_method(
    "sync-sde",
    STEPS,
    START,
    INTEGRATOR,
    ETA,
    Setting("coupling", str, "synchronous", "synchronous (the method), or an ablation: independent, reflection, a correlation rho",
            choices=("synchronous", "independent", "reflection"), also=(float,)),
    Setting("forward_rule", str, None, "the source path: midpoint (the reference code's, rectified flow) or exact",
            choices=("midpoint", "exact")),
)  # fmt: skip
def sync_sde(
    backbone: Any,
    x: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int | None = None,
    start: int | None = None,
    grid: Any = None,
    noise: Noise = 0,
    mask: torch.Tensor | None = None,
    path: torch.Tensor | None = None,
    integrator: Any = None,
    eta: float | None = None,
    coupling: Coupling | str | float | None = None,
    forward_rule: str | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit latents ``x`` ``(B, *latent)`` from ``source`` to ``target`` with sync-SDE.

    Defaults: the backbone's (FLUX: the reference's 28 steps from index 4; SD: 50 from 10), then
    Euler–Maruyama on rectified flow (DDPM on VP), ``eta = 1``, the schedule's forward path rule,
    synchronous coupling. ``noise`` draws the forward path (seeds, a Brownian source or recorded
    normals ``(B, steps, *latent)``); ``path`` ``(steps + 1, B, *latent)`` gives it instead
    (``path[-1]`` must be ``x``). Other couplings are ablations; ``mask`` (1 = editable) keeps the
    source exactly outside the region.
    """
    e = begin(sync_sde, backbone, x, source, target, grid=grid, mask=mask, n_steps=n_steps, start=start,
              integrator=integrator, eta=eta, coupling=coupling, forward_rule=forward_rule)  # fmt: skip
    o, schedule = e.options, backbone.schedule
    rule = o.get("forward_rule") or schedule.default_path_rule
    with Timer() as timer:
        if path is None:
            path = schedule.forward_path(e.x, e.grid, normals(noise, e.grid, e.x)[0], rule)
        elif tuple(path.shape) != (e.grid.n_steps + 1, *e.x.shape) or not torch.equal(path[-1].to(e.x), e.x):
            raise ValueError(f"path must have shape {(e.grid.n_steps + 1, *e.x.shape)} and end at the source latents")
        system = Members(backbone, backbone.encode_conditions([e.source, e.target]), 2, eta=o["eta"], mask=e.mask,
                         integrator=e.integrator)  # fmt: skip
        driver = PathDriver(path.to(e.x), reference=0, extra_seed=derive_seeds(noise if is_seed(noise) else 0, 1))
        cpl = o["coupling"]
        cpl = float(cpl) if isinstance(cpl, str) and cpl.lower() not in ("synchronous", "independent", "reflection") else cpl
        sol = solve(system, torch.stack([path[0], path[0]]).to(e.x), e.grid, e.integrator, noise=driver, coupling=cpl,
                    progress=progress)  # fmt: skip
    return e.result(sol.y[1], system.model_calls, 2 * system.model_calls, timer.seconds, forward_rule=rule,
                    coupling=str(cpl), masked=mask is not None)  # fmt: skip
