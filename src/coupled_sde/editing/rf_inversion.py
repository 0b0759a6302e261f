"""RF-Inversion (Rout et al., "Semantic Image Inversion and Editing using Rectified Stochastic
Differential Equations", ICLR 2025, Algorithms 1 and 2) as two ODE solves of the core's loop.

Both stages are the probability-flow ODE ``dx/dsigma = u(x, sigma, c)`` with the velocity pulled
towards the straight line through an *anchor* (the paper's "conditional vector field"):

* controlled forward ODE (inversion, ``sigma`` increasing, source condition), anchor a fixed noise
  sample ``y1``: ``dY/dsigma = u + gamma ((y1 - Y) / (1 - sigma) - u)`` (paper eq. 8);
* controlled reverse ODE (editing, ``sigma`` decreasing, target condition), anchor the source
  ``y0``: ``dX/dsigma = u + eta(sigma) ((X - y0) / sigma - u)`` (paper eq. 15, written in ``sigma``),
  with ``eta`` active on the steps ``eta_start <= i < eta_stop`` of the sampling schedule and 0 after.

``(y1 - Y) / (1 - sigma)`` and ``(X - y0) / sigma`` are the velocities ``eps - x0`` of the straight
lines ``x_sigma = (1 - sigma) x0 + sigma eps`` through the current state and the anchor. Cost: one
model call per step and stage (28 + 28 on FLUX). Euler steps, as published; the controller is
singular at the ends it points to, which Euler never evaluates.

``inversion="community"`` reproduces diffusers' community ``pipeline_flux_rf_inversion.py`` instead
of the consistent forward grid: its forward steps are ``sigma_i - sigma_{i+1}`` of the sampling
schedule taken in sampling order while the model and the controller are evaluated at ``i / (N + 1)``
(``N`` steps). It is expressed as the same ODE on the grid ``s_i = 1 - sigma_i`` with the model time
``tau(s)`` interpolating ``tau(s_i) = i / (N + 1)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..backends.base import Condition
from ..brownian import GridBrownian
from ..grid import TimeGrid
from ..sde import CoupledSDE
from ..solve import solve
from .common import EditResult, Seeds, Timer, as_condition, derive_seeds, schedule
from .sync_sde import _as_latents

__all__ = ["rf_inversion", "ControlledFlow"]

Tensor = torch.Tensor


class ControlledFlow(CoupledSDE):
    """``dx/dsigma = u(x, tau(sigma), c) + lam(sigma) (v_line(x, tau(sigma)) - u)`` for one member.

    ``toward="noise"``: ``v_line = (anchor - x) / (1 - tau)`` (anchor a noise sample);
    ``toward="data"``: ``v_line = (x - anchor) / tau`` (anchor the data). ``strength`` is a float or a
    function of ``sigma``; ``time_map`` (two increasing-abscissa knot arrays) maps the grid variable
    to the model's noise level (identity when ``None``).
    """

    noise_type = None
    n_members = 1

    def __init__(
        self,
        backbone: Any,
        encoded: Any,
        anchor: Tensor,
        toward: str,
        strength: Any,
        time_map: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if toward not in ("noise", "data"):
            raise ValueError(f"toward must be 'noise' or 'data', got {toward!r}")
        self.backbone, self.encoded, self.anchor, self.toward = backbone, encoded, anchor, toward
        self.strength = strength if callable(strength) else (lambda s, c=float(strength): c)
        self.time_map = time_map
        self.model_calls = 0

    def model_time(self, s: float) -> float:
        if self.time_map is None:
            return float(s)
        xp, fp = self.time_map
        return float(np.interp(s, xp, fp))

    def drift(self, t: float, x: Tensor) -> Tensor:
        tau = self.model_time(t)
        u = self.backbone.predict(x, tau, self.encoded)
        self.model_calls += 1
        lam = self.strength(t)
        if lam == 0.0:
            return u
        if self.toward == "noise":
            line = (self.anchor - x[0]) / (1.0 - tau)
        else:
            line = (x[0] - self.anchor) / tau
        return u + lam * (line - u)


def _noise_sample(noise: Tensor | None, seed: Seeds, x_src: Tensor) -> Tensor:
    if noise is not None:
        y1 = torch.as_tensor(noise)
        if tuple(y1.shape) != tuple(x_src.shape):
            raise ValueError(f"noise must be the fixed noise sample of the latents' shape {tuple(x_src.shape)}, got {tuple(y1.shape)}")
        return y1.to(x_src)
    one = TimeGrid([0.0, 1.0])
    return GridBrownian(one, x_src.shape[0], tuple(x_src.shape[1:]), seed=derive_seeds(seed, 3)).normals(0, 1)[0, :, 0].to(x_src)


def rf_inversion(
    backbone: object,
    x_src: Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int = 28,
    start: int = 0,
    gamma: float = 0.5,
    eta: float = 0.9,
    eta_start: int = 0,
    eta_stop: int | None = None,
    source_guidance: float | None = None,
    target_guidance: float | None = None,
    inversion: str = "schedule",
    mask: Tensor | None = None,
    seed: Seeds = 0,
    noise: Tensor | None = None,
    sigmas: Tensor | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit ``x_src`` ``(B, *latent)`` with RF-Inversion: ``n_steps - start`` controlled inversion
    steps under ``source`` to ``sigma_start``, then as many controlled editing steps under ``target``.

    ``eta_stop`` defaults to ``n_steps // 4`` (step 7 of 28, the community pipeline's
    ``stop_timestep=0.25``). ``noise`` is the fixed noise sample ``y1`` itself (else drawn from ``seed``).
    """
    x_src = _as_latents(x_src)
    if mask is not None:
        raise ValueError("rf-inversion does not take a mask (its controller pulls the whole image); use sync-sde or flowedit")
    if not 0.0 <= gamma <= 1.0 or not 0.0 <= eta <= 1.0:
        raise ValueError(f"gamma and eta are controller strengths in [0, 1], got gamma={gamma}, eta={eta}")
    if inversion not in ("schedule", "community"):
        raise ValueError(f"inversion must be 'schedule' or 'community', got {inversion!r}")
    if isinstance(start, bool) or int(start) != start or not 0 <= start < n_steps:
        raise ValueError(f"start must be a step index in 0..{n_steps - 1}, got {start!r}")
    if inversion == "community" and start != 0:
        raise ValueError("inversion='community' inverts the whole schedule: it needs start=0")
    stop = n_steps // 4 if eta_stop is None else int(eta_stop)
    if not 0 <= eta_start <= stop <= n_steps:
        raise ValueError(f"the eta window needs 0 <= eta_start <= eta_stop <= n_steps, got {eta_start}, {stop}, {n_steps}")
    src, tgt = as_condition(source, source_guidance), as_condition(target, target_guidance)
    full = schedule(backbone, n_steps, x_src.shape[1:], sigmas)
    grid = full.sub(start)
    s_hi, s_lo = full[eta_start], full[stop]

    def eta_of(sigma: float) -> float:  # steps eta_start <= i < eta_stop: s_lo < sigma_i <= s_hi
        return eta if s_lo < sigma <= s_hi else 0.0

    with Timer() as timer:
        y1 = _noise_sample(noise, seed, x_src)
        if inversion == "community":
            times = full.times.to(torch.float64)
            s_grid = TimeGrid(1.0 - times)  # 0 = 1 - sigma_0, ..., 1 - sigma_N = 1
            tau = np.arange(n_steps + 1, dtype=np.float64) / (n_steps + 1)
            time_map = ((1.0 - times).numpy(), tau)
        else:
            s_grid, time_map = TimeGrid(grid.times.flip(0)), None
        up = ControlledFlow(backbone, backbone.encode_conditions([src]), y1, "noise", gamma, time_map)
        z = solve(up, x_src.unsqueeze(0), s_grid, "euler", progress=progress).y
        down = ControlledFlow(backbone, backbone.encode_conditions([tgt]), x_src, "data", eta_of)
        out = solve(down, z, grid, "euler", progress=progress).y[0]
    calls = up.model_calls + down.model_calls
    settings = dict(
        n_steps=n_steps,
        start=start,
        gamma=gamma,
        eta=eta,
        eta_start=eta_start,
        eta_stop=stop,
        inversion=inversion,
        source_guidance=src.guidance,
        target_guidance=tgt.guidance,
    )
    return EditResult(out, "rf-inversion", settings, calls, calls, timer.seconds)
