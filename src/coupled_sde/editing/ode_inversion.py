"""ODE inversion: integrate the probability-flow ODE forward under the source prompt from the data
to ``t_{i0}``, then backward under the target prompt (on rectified flow ``dx/dsigma = u``; on VP
DDIM inversion, Song et al. 2021, as diffusers' ``DDIMInverseScheduler``, then DDIM sampling).
Deterministic; exact reconstruction only in the limit of small steps (the inversion error).

With ``integrator="rf-solver"`` or ``"fireflow"`` this is RF-Solver-Edit's and FireFlow's editing
method; their feature sharing (the first ``share_values`` editing steps read the late attention
layers' values that the inversion computed, :mod:`coupled_sde.editing.value_sharing`) is an option
on backbones that can share attention values (FLUX.1). As they do, it starts at ``start = 0``: the
ODE is regular at pure noise."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from ..backends.base import Condition
from ..grid import TimeGrid
from ..solve import solve
from .common import EditResult, Noise, Timer, begin
from .members import Members
from .registry import INTEGRATOR, START, STEPS, Setting, register_method
from .value_sharing import SharedValues, require_value_sharing

__all__ = ["ode_inversion"]


SHARE_VALUES = Setting(
    "share_values", int, 0, "feature sharing of RF-Solver-Edit/FireFlow: the first N editing steps read the inversion's "
    "attention values (FLUX; 0 = off)", low=0,
)  # fmt: skip


@register_method("ode-inversion", STEPS, START, INTEGRATOR, SHARE_VALUES, stochastic=False, starts_at_noise=True)
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
    share_values: int | None = None,
    progress: bool = False,
) -> EditResult:
    """Invert ``x`` under ``source`` to ``t_{i0}`` and regenerate under ``target`` (``noise`` is unused).

    With a ``mask``, the regeneration carries a source member beside the target (one batched call)
    and blends their drifts, so the source's reconstruction is kept outside the mask.
    """
    e = begin(ode_inversion, backbone, x, source, target, grid=grid, mask=mask, default_eta=0.0, n_steps=n_steps, start=start,
              integrator=integrator, share_values=share_values)  # fmt: skip
    shared = sharing(backbone, e.grid, e.options.get("share_values", 0), e.x.shape[0])
    enc = backbone.encode_conditions
    with Timer() as timer, nullcontext() if shared is None else backbone.share_attention_values(shared):
        up = Members(backbone, enc([e.source]), 1, eta=0.0, integrator=e.integrator)
        z = solve(up, e.x.unsqueeze(0), TimeGrid(e.grid.times.flip(0)), e.integrator, callback=clock(up, shared, "record"),
                  progress=progress).y  # fmt: skip
        conditions = [e.target] if e.mask is None else [e.source, e.target]
        down = Members(backbone, enc(conditions), len(conditions), eta=0.0, mask=e.mask, integrator=e.integrator)
        out = solve(down, z if e.mask is None else torch.cat([z, z]), e.grid, e.integrator, callback=clock(down, shared, "inject"),
                    progress=progress).y[-1]  # fmt: skip
    calls = up.model_calls + down.model_calls
    return e.result(out, calls, up.model_calls + len(conditions) * down.model_calls, timer.seconds, masked=mask is not None)


def sharing(backbone: Any, grid: TimeGrid, steps: int, batch: int) -> SharedValues | None:
    """The attention-value store for ``steps`` shared steps (``None`` for none), or a clear error for a
    backbone that cannot share attention values (before any model call)."""
    if not steps:
        return None
    require_value_sharing(backbone)
    return SharedValues(grid, steps, batch)


def clock(members: Members, shared: SharedValues | None, mode: str) -> Any:
    """Let ``shared`` follow this solve of ``members`` (``mode`` record or inject): the grid time of each
    model call and the step callback; ``None`` without sharing."""
    if shared is None:
        return None
    members.on_call = shared.at
    return shared.recording() if mode == "record" else shared.injecting()
