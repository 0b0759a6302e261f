"""FlowEdit (Kulikov et al., ICCV 2025) as an ODE on the edit ``Z`` solved by the core's loop.

``Z <- x_src``; at each active step ``i`` (the first ``N - n_max`` are skipped): fresh ``eps``,
``Z_src = (1 - sigma_i) x_src + sigma_i eps``, ``Z_tar = Z + Z_src - x_src``,
``Z <- Z + (sigma_{i+1} - sigma_i) mean_{n_avg}[V(Z_tar, c_tgt) - V(Z_src, c_src)]``; the last
``n_min`` steps are plain target sampling from ``Z_tar`` (``shared/spec/method.md`` §5). All
``2 n_avg`` evaluations of a step go through the backbone in one batched call. Defaults are FLUX's
(28 steps, n_max 24, guidance 1.5 / 5.5); SD3 uses 50 steps, n_max 33, 3.5 / 13.5.
"""

from __future__ import annotations

from typing import Any

import torch

from ..backends.base import Condition
from ..brownian import GridBrownian
from ..grid import TimeGrid
from ..sde import CoupledSDE
from ..solve import solve
from .common import EditResult, Seeds, Timer, as_condition, schedule
from .members import FlowMembers
from .sync_sde import _as_latents, _mask

__all__ = ["flowedit"]


class _FlowEditODE(CoupledSDE):
    """``dZ/dsigma = mean_avg[V(Z_tar, c_tgt) - V(Z_src, c_src)]`` with the step's fresh noise."""

    noise_type = None
    n_members = 1

    def __init__(
        self,
        backbone: Any,
        encoded: Any,
        x_src: torch.Tensor,
        grid: TimeGrid,
        eps: torch.Tensor,
        n_avg: int,
        mask: torch.Tensor | None,
    ) -> None:
        self.backbone, self.encoded, self.x_src, self.grid = backbone, encoded, x_src, grid
        self.eps, self.n_avg, self.mask = eps, n_avg, mask  # eps: (n_avg, B, N, *latent)
        self.model_calls = 0

    def drift(self, t: float, z: torch.Tensor) -> torch.Tensor:
        i = self.grid.index(t)
        eps = self.eps[:, :, i]
        z_src = (1.0 - t) * self.x_src + t * eps  # (n_avg, B, *latent)
        z_tar = z[0] + z_src - self.x_src
        v = self.backbone.predict(torch.cat([z_src, z_tar]), t, self.encoded)
        self.model_calls += 1
        n = self.n_avg
        delta = (v[n:] - v[:n]).mean(0, keepdim=True)
        return delta if self.mask is None else delta * self.mask


def flowedit(
    backbone: object,
    x_src: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int = 28,
    n_max: int = 24,
    n_min: int = 0,
    n_avg: int = 1,
    source_guidance: float | None = 1.5,
    target_guidance: float | None = 5.5,
    mask: torch.Tensor | None = None,
    seed: Seeds = 0,
    sigmas: torch.Tensor | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit ``x_src`` ``(B, *latent)`` with FlowEdit. Guidance arguments override the conditions'
    (``None`` keeps the condition's own)."""
    x_src = _as_latents(x_src)
    if not 0 <= n_min < n_max <= n_steps:
        raise ValueError(f"FlowEdit needs 0 <= n_min < n_max <= n_steps, got n_min={n_min}, n_max={n_max}, n_steps={n_steps}")
    if n_avg < 1:
        raise ValueError(f"n_avg must be >= 1, got {n_avg}")
    src, tgt = as_condition(source, source_guidance), as_condition(target, target_guidance)
    full = schedule(backbone, n_steps, x_src.shape[1:], sigmas)
    first, switch = n_steps - n_max, n_steps - n_min
    m = _mask(mask, x_src)
    with Timer() as timer:
        B, latent = x_src.shape[0], tuple(x_src.shape[1:])
        eps = GridBrownian(full, B, latent, seed=seed, streams=n_avg).normals(0, n_steps).to(x_src)
        encoded = backbone.encode_conditions([src] * n_avg + [tgt] * n_avg)
        ode = _FlowEditODE(backbone, encoded, x_src, full, eps, n_avg, m)
        z = solve(ode, x_src.unsqueeze(0), full.sub(first, switch), "euler", progress=progress).y[0]
        calls, evals = ode.model_calls, 2 * n_avg * ode.model_calls
        if n_min > 0:
            s = full[switch]
            z = z + (1.0 - s) * x_src + s * eps[0, :, switch] - x_src
            tail = FlowMembers(backbone, backbone.encode_conditions([tgt]), 1, "ode")
            z = solve(tail, z.unsqueeze(0), full.sub(switch), "euler", progress=progress).y[0]
            calls, evals = calls + tail.model_calls, evals + tail.model_calls
    settings = dict(
        n_steps=n_steps,
        n_max=n_max,
        n_min=n_min,
        n_avg=n_avg,
        source_guidance=src.guidance,
        target_guidance=tgt.guidance,
        masked=mask is not None,
    )
    return EditResult(z, "flowedit", settings, calls, evals, timer.seconds)
