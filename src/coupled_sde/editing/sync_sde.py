"""sync-SDE (Zhang & Scott, "Semantic Editing with Coupled Stochastic Differential Equations",
ICML 2026): the target process is the reverse-time SDE under the target prompt, driven by the
backward Brownian increments of the source's own forward noising path.

As a configuration of the core (``shared/spec/method.md`` §2–§3):

1. the forward noising path ``X_i = (1 - sigma_i)(x0 + B_i)`` of the source on the grid
   ``sigma_{i0} > ... > sigma_N = 0`` (midpoint rule as the reference code, or exact variances);
2. two members ``[source, target]`` of the flow backbone's reverse SDE, evaluated in one batched
   model call per stage;
3. the :class:`~coupled_sde.drivers.PathDriver` pins the source member to that path and drives the
   target by the increments the path implies, for whichever integrator (Euler–Maruyama, Heun); with
   the synchronous coupling this is the paper's update ``D <- D + (b_tgt(X + D) - b_src(X)) Δ``.

Identical prompts return the source latent exactly, at any step count and for every integrator.
"""

from __future__ import annotations

import torch

from ..backends.base import Condition
from ..brownian import GridBrownian
from ..coupling import Coupling
from ..drivers import PathDriver
from ..integrators import Integrator
from ..noising import RectifiedFlowNoising
from ..solve import solve
from .common import EditResult, Seeds, Timer, as_condition, derive_seeds, schedule, start_grid
from .members import FlowMembers

__all__ = ["sync_sde", "forward_path"]


def forward_path(x0: torch.Tensor, grid: torch.Tensor | object, seed: Seeds = 0, rule: str = "midpoint") -> torch.Tensor:
    """The source's forward noising path on a decreasing grid ``sigma_0 > ... > sigma_M = 0``.

    Returns ``(M + 1, B, *latent)`` with ``X_i = (1 - sigma_i)(x0 + B_i)``, ``B_M = 0`` and
    ``B_i = B_{i+1} + m_i xi_i``: ``m_i`` by the reference code's midpoint rule
    (``sqrt(2 s)/(1 - s)^1.5 sqrt(Δ)`` at ``s = (sigma_i + sigma_{i+1})/2``; it under-estimates the
    variance near sigma = 1) or ``rule="exact"`` (independent increments with the exact variance of
    ``B``). ``xi_i`` is the standard normal of grid step ``i`` from a
    :class:`~coupled_sde.brownian.GridBrownian` with the given (per-sample) seeds.
    """
    from ..grid import TimeGrid

    g = grid if isinstance(grid, TimeGrid) else TimeGrid(grid)
    if rule not in ("midpoint", "exact"):
        raise ValueError(f"forward path rule must be 'midpoint' or 'exact', got {rule!r}")
    scale = RectifiedFlowNoising.midpoint_path_scale if rule == "midpoint" else RectifiedFlowNoising.exact_path_scale
    B, latent = x0.shape[0], tuple(x0.shape[1:])
    xi = GridBrownian(g, B, latent, seed=seed, dtype=torch.float32).normals(0, g.n_steps)[0].to(x0.device)
    b = torch.zeros_like(x0)
    path = [x0]  # X_M = x0 exactly
    for i in range(g.n_steps - 1, -1, -1):
        b = b + scale(g[i], g[i + 1]) * xi[:, i].to(x0.dtype)
        path.append((1.0 - g[i]) * (x0 + b))
    return torch.stack(path[::-1])


def sync_sde(
    backbone: object,
    x_src: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int = 28,
    start: int = 4,
    integrator: Integrator | str = "euler",
    coupling: Coupling | str | float = "synchronous",
    forward_rule: str = "midpoint",
    mask: torch.Tensor | None = None,
    seed: Seeds = 0,
    sigmas: torch.Tensor | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit latents ``x_src`` ``(B, *latent)`` from ``source`` to ``target`` with sync-SDE.

    Defaults are the reference's (28 steps, start index 4, Euler–Maruyama, midpoint forward path,
    synchronous coupling). ``coupling`` other than synchronous (``"independent"``, ``"reflection"``,
    a correlation ``rho``) are ablations; ``mask`` (1 = editable, broadcastable to ``x_src``) keeps
    the source exactly outside the region.
    """
    x_src = _as_latents(x_src)
    src, tgt = as_condition(source), as_condition(target)
    grid = start_grid(schedule(backbone, n_steps, x_src.shape[1:], sigmas), start)
    with Timer() as timer:
        path = forward_path(x_src, grid, seed, forward_rule)
        system = FlowMembers(backbone, backbone.encode_conditions([src, tgt]), 2, "sde", _mask(mask, x_src), reference=0)
        driver = PathDriver(path, reference=0, extra_seed=derive_seeds(seed, 1))
        sol = solve(system, torch.stack([path[0], path[0]]), grid, integrator, noise=driver, coupling=coupling, progress=progress)
    settings = dict(
        n_steps=n_steps,
        start=start,
        t0=grid[0],
        integrator=str(integrator),
        coupling=str(coupling),
        forward_rule=forward_rule,
        masked=mask is not None,
    )
    return EditResult(sol.y[1], "sync-sde", settings, system.model_calls, 2 * system.model_calls, timer.seconds)


def _as_latents(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"latents must be a tensor of shape (batch, *latent), got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise TypeError(f"latents must be floating point, got {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()  # SDE arithmetic in float32 even when the model runs in bf16
    if not torch.isfinite(x).all():
        raise ValueError("the source latents contain NaN or Inf")
    return x


def _mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    m = torch.as_tensor(mask, dtype=x.dtype, device=x.device)
    try:
        torch.broadcast_shapes(m.shape, x.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(m.shape)} does not broadcast to the latents {tuple(x.shape)}") from None
    if torch.broadcast_shapes(m.shape, x.shape) != x.shape:
        raise ValueError(f"mask of shape {tuple(m.shape)} would broadcast the latents {tuple(x.shape)} to a larger shape")
    if (m < 0).any() or (m > 1).any():
        raise ValueError("mask values must lie in [0, 1] (1 = editable)")
    return m
