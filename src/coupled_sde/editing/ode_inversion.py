"""ODE inversion: integrate the probability-flow ODE forward under the source prompt from the data
to ``t_{i0}``, then backward under the target prompt (on rectified flow ``dx/dsigma = u``; on VP
DDIM inversion, Song et al. 2021, as diffusers' ``DDIMInverseScheduler``, then DDIM sampling).
Deterministic; exact reconstruction only in the limit of small steps (the inversion error)."""

from __future__ import annotations

from typing import Any

import torch

from ..backends.base import Condition
from ..grid import TimeGrid
from ..solve import solve
from .common import EditResult, Noise, Timer, begin
from .members import Members
from .registry import INTEGRATOR, START, STEPS, register_method

__all__ = ["ode_inversion"]


@register_method("ode-inversion", STEPS, START, INTEGRATOR, stochastic=False)
def ode_inversion(
    backbone: Any,
    x: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int | None = None,
    start: int | None = None,
    grid: Any = None,
    noise: Noise | None = None,
    mask: torch.Tensor | None = None,
    integrator: Any = None,
    progress: bool = False,
) -> EditResult:
    """Invert ``x`` under ``source`` to ``t_{i0}`` and regenerate under ``target`` (``noise`` is unused).

    With a ``mask``, the regeneration carries a source member beside the target (one batched call)
    and blends their drifts, so the source's reconstruction is kept outside the mask.
    """
    e = begin(ode_inversion, backbone, x, source, target, grid=grid, mask=mask, default_eta=0.0, n_steps=n_steps, start=start,
              integrator=integrator)  # fmt: skip
    enc = backbone.encode_conditions
    with Timer() as timer:
        up = Members(backbone, enc([e.source]), 1, eta=0.0, integrator=e.integrator)
        z = solve(up, e.x.unsqueeze(0), TimeGrid(e.grid.times.flip(0)), e.integrator, progress=progress).y
        conditions = [e.target] if e.mask is None else [e.source, e.target]
        down = Members(backbone, enc(conditions), len(conditions), eta=0.0, mask=e.mask, integrator=e.integrator)
        out = solve(down, z if e.mask is None else torch.cat([z, z]), e.grid, e.integrator, progress=progress).y[-1]
    calls = up.model_calls + down.model_calls
    return e.result(out, calls, up.model_calls + len(conditions) * down.model_calls, timer.seconds, masked=mask is not None)
