"""SDEdit (Meng et al., ICLR 2022): noise the source to ``t_{i0}`` with a fresh draw, then sample the
target's reverse SDE with fresh (independent) noise. The baseline that sync-SDE improves on: the
target has the right law but forgets the source's details. One implementation for every schedule:
the noisy start is the exact forward transition from the data (``alpha x0 + sigma eps`` on rectified
flow), the reverse SDE the backbone's members (Euler–Maruyama on rectified flow, DDPM on VP)."""

from __future__ import annotations

from typing import Any

import torch

from ..backends.base import Condition
from ..brownian import GridBrownian, RecordedBrownian
from ..grid import TimeGrid
from ..solve import solve
from .common import EditResult, Noise, Timer, begin, derive_seeds, is_seed, normals
from .members import Members
from .registry import ETA, INTEGRATOR, START, STEPS, register_method

__all__ = ["sdedit"]


@register_method("sdedit", STEPS, START, INTEGRATOR, ETA, conditions=("guidance", "negative_prompt", "true_cfg"), masks=False)
def sdedit(
    backbone: Any,
    x: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int | None = None,
    start: int | None = None,
    grid: Any = None,
    noise: Noise = 0,
    mask: None = None,
    integrator: Any = None,
    eta: float | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit ``x`` ``(B, *latent)`` towards ``target`` with SDEdit (one member, fresh noise; ``source`` is unused).

    ``noise``: seeds (the chain uses them, the start a seed derived from them), recorded normals
    ``(B, steps + 1, *latent)`` (the start's first, then the chain's), or a Brownian source with two
    streams (stream 0 drives the chain, stream 1's first step gives the start).
    """
    e = begin(sdedit, backbone, x, source, target, grid=grid, mask=mask, n_steps=n_steps, start=start,
              integrator=integrator, eta=eta)  # fmt: skip
    B, latent, n = e.x.shape[0], tuple(e.x.shape[1:]), e.grid.n_steps
    with Timer() as timer:
        if is_seed(noise):
            eps = GridBrownian(TimeGrid([0.0, 1.0]), B, latent, seed=derive_seeds(noise, 2)).normals(0, 1)[0, :, 0]
            chain = noise
        elif isinstance(noise, torch.Tensor):
            if tuple(noise.shape) != (B, n + 1, *latent):
                raise ValueError(f"sdedit's recorded normals must have shape {(B, n + 1, *latent)} (start, then each step)")
            eps, z = noise[:, 0], noise[:, 1:]
            scale = torch.tensor([abs(dt) ** 0.5 for _, dt in e.grid.steps()], dtype=z.dtype).reshape((1, n) + (1,) * len(latent))
            chain = RecordedBrownian(e.grid, (z * scale.to(z.device)).unsqueeze(0))
        else:
            both = normals(noise, e.grid, e.x, streams=2)
            eps, chain = both[1, :, 0], RecordedBrownian(e.grid, noise.on_grid(e.grid)[:1])
        a, b = backbone.schedule.transition(backbone.schedule.data_time, e.grid[0])
        x_t = a * e.x + b * eps.to(e.x)
        system = Members(backbone, backbone.encode_conditions([e.target]), 1, eta=e.options["eta"], integrator=e.integrator)
        sol = solve(system, x_t.unsqueeze(0), e.grid, e.integrator, noise=chain if system.noise_type else None, progress=progress)
    return e.result(sol.y[0], system.model_calls, system.model_calls, timer.seconds)
