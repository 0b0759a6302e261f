"""FlowEdit (Kulikov et al., ICCV 2025), for every schedule, as a solve of source/target members.

At each active step ``i`` (the first ``N - n_max`` are skipped), with fresh noise ``eps_i``:
``Z_src = alpha_i x_src + sigma_i eps_i`` (the forward transition from the data),
``Z_tar = Z + Z_src - x_src``, and ``Z`` moves by the difference of one probability-flow step of
``Z_tar`` under the target and of ``Z_src`` under the source. On rectified flow with Euler this is
the paper's ``Z <- Z + (sigma_{i+1} - sigma_i) mean_{n_avg}[V(Z_tar, c_tgt) - V(Z_src, c_src)]``; on
a VP model the step is DDIM's (FlowEdit in its alpha/sigma form). The last ``n_min`` steps are
plain target sampling from ``Z_tar``.

The loop is :func:`coupled_sde.solve` on ``2 n_avg`` members ``[Z_src (n_avg), Z_tar (n_avg)]`` (one
batched call per stage, any integrator of the schedule) with a callback that, after each step,
folds the members' moves into ``Z`` and redraws the next step's pair. Defaults are the backbone's
(FLUX: 28 steps, n_max 24, guidance 1.5 / 5.5; SD3 uses 50 steps, n_max 33, 3.5 / 13.5).
"""

from __future__ import annotations

from typing import Any

import torch

from ..backends.base import Condition
from ..solve import solve
from .common import EditResult, Noise, Timer, begin, normals
from .members import Members
from .registry import INTEGRATOR, START, STEPS, Setting, register_method

__all__ = ["flowedit"]


@register_method(
    "flowedit",
    STEPS,
    START,
    INTEGRATOR,
    Setting("n_max", int, None, "FlowEdit's n_max: active steps (instead of start = steps - n_max)", low=1),
    Setting("n_min", int, 0, "final steps of plain target sampling", low=0),
    Setting("n_avg", int, 1, "noise draws averaged per step", low=1),
)
def flowedit(
    backbone: Any,
    x: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int | None = None,
    start: int | None = None,
    n_max: int | None = None,
    n_min: int | None = None,
    n_avg: int | None = None,
    grid: Any = None,
    noise: Noise = 0,
    mask: torch.Tensor | None = None,
    integrator: Any = None,
    progress: bool = False,
) -> EditResult:
    """Edit ``x`` ``(B, *latent)`` with FlowEdit. ``noise``: the fresh draws of every step (seeds, a
    Brownian source with ``n_avg`` streams, or normals ``(n_avg, B, steps, *latent)``); ``mask``
    (1 = editable) confines the change of ``Z``."""
    e = begin(flowedit, backbone, x, source, target, grid=grid, mask=mask, default_eta=0.0, n_steps=n_steps, start=start,
              n_max=n_max, n_min=n_min, n_avg=n_avg, integrator=integrator)  # fmt: skip
    N, n_avg, n_min = e.full.n_steps, e.options["n_avg"], e.options["n_min"]
    first, switch = N - e.grid.n_steps, N - n_min
    if not first < switch:
        raise ValueError(f"FlowEdit needs 0 <= n_min < n_max <= n_steps, got n_min={n_min}, n_max={N - first}, n_steps={N}")
    schedule, x_src, m = backbone.schedule, e.x, e.mask
    eps = normals(noise, e.full, x_src, streams=n_avg).to(x_src)  # (n_avg, B, N, *latent)

    def pair(i: int, z: torch.Tensor) -> torch.Tensor:
        a, b = schedule.transition(schedule.data_time, e.full[i])
        z_src = a * x_src + b * eps[:, :, i]
        return torch.cat([z_src, z + z_src - x_src])  # [Z_src (n_avg), Z_tar (n_avg)]

    state = {"z": x_src}

    def fold(i: int, t_next: float, y: torch.Tensor) -> torch.Tensor | None:
        delta = (y[n_avg:] - y[:n_avg]).mean(0) + x_src - state["z"]  # mean(Z_tar' - Z_src') - (Z - x_src)
        state["z"] = state["z"] + (delta if m is None else delta * m)
        return pair(first + i + 1, state["z"]) if first + i + 1 < switch else None

    with Timer() as timer:
        system = Members(backbone, backbone.encode_conditions([e.source] * n_avg + [e.target] * n_avg), 2 * n_avg, eta=0.0,
                         integrator=e.integrator)  # fmt: skip
        solve(system, pair(first, x_src), e.full.sub(first, switch), e.integrator, callback=fold, progress=progress)
        z, calls, evals = state["z"], system.model_calls, 2 * n_avg * system.model_calls
        if n_min > 0:
            tail = Members(backbone, backbone.encode_conditions([e.target]), 1, eta=0.0, integrator=e.integrator)
            z_tar = pair(switch, z)[n_avg]
            z = solve(tail, z_tar.unsqueeze(0), e.full.sub(switch), e.integrator, progress=progress).y[0]
            calls, evals = calls + tail.model_calls, evals + tail.model_calls
    report = dict(n_max=N - first, n_min=n_min, n_avg=n_avg, masked=mask is not None)
    return e.result(z, calls, evals, timer.seconds, **report)
