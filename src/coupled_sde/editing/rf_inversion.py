"""RF-Inversion (Rout et al., "Semantic Image Inversion and Editing using Rectified Stochastic
Differential Equations", ICLR 2025, Algorithms 1 and 2) as two ODE solves of the core's loop.

Both stages are the probability-flow ODE ``dx/dsigma = u(x, sigma, c)`` with the velocity pulled
towards the straight line through an *anchor* (the paper's "conditional vector field"):

* controlled forward ODE (inversion, ``sigma`` increasing, source condition), anchor a fixed noise
  sample ``y1``: ``dY/dsigma = u + gamma ((y1 - Y) / (1 - sigma) - u)`` (paper eq. 8);
* controlled reverse ODE (editing, ``sigma`` decreasing, target condition), anchor the source
  ``y0``: ``dX/dsigma = u + eta(sigma) ((X - y0) / sigma - u)`` (paper eq. 15, written in ``sigma``),
  with ``eta`` active on the steps ``eta_start <= i < eta_stop`` of the sampling schedule and 0 after
  (``eta_decay_power = p > 0`` lowers it to ``eta (1 - i/N)^p`` on step ``i`` of ``N``, the community
  pipeline's ``decay_eta`` with ``eta_decay_power = p``).

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
from ..schedules import RectifiedFlow
from ..sde import CoupledSDE
from ..solve import solve
from .common import EditResult, Noise, Timer, begin, derive_seeds, is_seed
from .registry import STEPS, Setting, register_method

__all__ = ["rf_inversion", "ControlledFlow"]

Tensor = torch.Tensor


class ControlledFlow(CoupledSDE):
    """``dx/dsigma = u(x, tau(sigma), c) + lam(sigma) (v_line(x, tau(sigma)) - u)`` for one member.

    ``toward="noise"``: ``v_line = (anchor - x) / (1 - tau)`` (anchor a noise sample);
    ``toward="data"``: ``v_line = (x - anchor) / tau`` (anchor the data). ``strength`` is a float or a
    function of ``sigma``; ``time_map`` (increasing knots ``(xp, fp)``) maps the grid variable to the
    model's noise level (identity when ``None``). ``u`` is the backbone's flow prediction.
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


def _noise_sample(noise: Noise, x: Tensor) -> Tensor:
    """The fixed noise sample ``y1``: from seeds (a stream of its own), or given as a tensor of the latents' shape."""
    if is_seed(noise):
        one = TimeGrid([0.0, 1.0])
        return GridBrownian(one, x.shape[0], tuple(x.shape[1:]), seed=derive_seeds(noise, 3)).normals(0, 1)[0, :, 0].to(x)
    if isinstance(noise, torch.Tensor):
        if tuple(noise.shape) != tuple(x.shape):
            raise ValueError(f"rf-inversion's noise is its fixed noise sample, of the latents' shape {tuple(x.shape)}; got {tuple(noise.shape)}")
        return noise.to(x)
    raise ValueError("rf-inversion draws one fixed noise sample: pass seeds (noise=0, or one per sample) or the sample itself")


@register_method(
    "rf-inversion",
    STEPS,
    Setting("start", int, 0, "first grid index: invert to t_start (0: the whole schedule, as published)", low=0),
    Setting("gamma", float, 0.5, "controller strength of the forward (inversion) ODE towards the noise sample", low=0.0, high=1.0),
    Setting("eta", float, 0.9, "controller strength of the reverse (editing) ODE towards the source", low=0.0, high=1.0),
    Setting("eta_start", int, 0, "first editing step with eta active", low=0),
    Setting("eta_stop", int, None, "editing steps i < eta_stop have eta active (default steps // 4: 7 of 28)", low=0),
    Setting("eta_decay_power", float, 0.0, "eta on step i of N is eta (1 - i/N)^p (the community pipeline's decay_eta; 0 = constant)",
            low=0.0),
    Setting("inversion", str, "schedule", "schedule (the reversed sampling grid) or community (diffusers' community pipeline)",
            choices=("schedule", "community")),
    masks=False,
    starts_at_noise=True,
)  # fmt: skip
def rf_inversion(
    backbone: Any,
    x: Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int | None = None,
    start: int | None = None,
    grid: Any = None,
    noise: Noise = 0,
    mask: None = None,
    gamma: float | None = None,
    eta: float | None = None,
    eta_start: int | None = None,
    eta_stop: int | None = None,
    eta_decay_power: float | None = None,
    inversion: str | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit ``x`` ``(B, *latent)`` with RF-Inversion: controlled inversion under ``source`` to
    ``t_start``, then as many controlled editing steps under ``target`` (rectified-flow backbones).

    ``noise`` gives the fixed noise sample ``y1``: seeds, or the sample itself ``(B, *latent)``.
    """
    if mask is not None:
        raise ValueError("rf-inversion does not take a mask (its controller pulls the whole image); use sync-sde or flowedit")
    schedule = getattr(backbone, "schedule", None)
    if not isinstance(schedule, RectifiedFlow) or getattr(backbone, "prediction", None) != "flow":
        raise ValueError(
            f"RF-Inversion is defined for rectified-flow backbones (a RectifiedFlow schedule, prediction 'flow'); "
            f"{type(backbone).__name__} has {schedule!r}"
        )
    e = begin(rf_inversion, backbone, x, source, target, grid=grid, n_steps=n_steps, start=start, gamma=gamma, eta=eta,
              eta_start=eta_start, eta_stop=eta_stop, eta_decay_power=eta_decay_power, inversion=inversion)  # fmt: skip
    kw, full, sub = e.options, e.full, e.grid
    n, start = kw["n_steps"], kw.get("start", 0)
    if full[-1] != schedule.data_time:
        raise ValueError("rf-inversion's grid must decrease from the noisiest time to the data (sigma = 0)")
    stop = n // 4 if kw.get("eta_stop") is None else int(kw["eta_stop"])
    e.settings["eta_stop"] = stop
    lo = kw.get("eta_start", 0)
    if not lo <= stop <= n:
        raise ValueError(f"rf-inversion's eta window needs eta_start <= eta_stop <= steps, got {lo}, {stop}, {n}")
    mode = kw.get("inversion", "schedule")
    if mode == "community" and start != 0:
        raise ValueError("inversion='community' inverts the whole schedule: it needs start=0")
    s_hi, s_lo = full[lo], full[stop]
    eta_value, power = kw["eta"], kw.get("eta_decay_power", 0.0)
    sigmas = full.times.to(torch.float64)

    def eta_of(sigma: float) -> float:  # editing steps eta_start <= i < eta_stop: s_lo < sigma_i <= s_hi
        if not s_lo < sigma <= s_hi:
            return 0.0
        if not power:
            return eta_value
        i = int((sigmas - sigma).abs().argmin())  # Euler evaluates at the grid points sigma_i
        return eta_value * (1.0 - i / n) ** power

    with Timer() as timer:
        y1 = _noise_sample(noise, e.x)
        if mode == "community":
            s_grid = TimeGrid(1.0 - sigmas)  # 0 = 1 - sigma_0, ..., 1 - sigma_N = 1
            time_map = ((1.0 - sigmas).numpy(), np.arange(n + 1, dtype=np.float64) / (n + 1))
        else:
            s_grid, time_map = TimeGrid(sub.times.flip(0)), None
        up = ControlledFlow(backbone, backbone.encode_conditions([e.source]), y1, "noise", kw["gamma"], time_map)
        z = solve(up, e.x.unsqueeze(0), s_grid, "euler", progress=progress).y
        down = ControlledFlow(backbone, backbone.encode_conditions([e.target]), e.x, "data", eta_of)
        out = solve(down, z, sub, "euler", progress=progress).y[0]
    calls = up.model_calls + down.model_calls
    return e.result(out, calls, calls, timer.seconds)
