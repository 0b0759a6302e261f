"""Adaptive step sizes: an embedded error estimate and a PI controller, on one Brownian path.

Each trial step ``[t, t + h]`` asks the driver for the noise *of that interval*
(:meth:`~coupled_sde.drivers.Driver.interval_noise`), so a rejected step re-queries the same
Brownian path over a shorter interval (a Brownian bridge inside the rejected one): the accepted
solution is a solution of the one path, whatever was rejected (Gaines & Lyons 1997, "Variable step
size control in the numerical solution of stochastic differential equations"; diffrax and torchsde do
the same with their Brownian trees). The error of a trial step is the integrator's embedded estimate
(Heun: the Heun step minus its Euler–Maruyama predictor) in the scaled RMS norm
``sqrt(mean((err / (atol + rtol max(|y|, |y'|)))²))`` over *all* members, so a coupled system
shares one accepted grid. The next step is ``h · safety · e_n^(−(p + i)/k) · e_(n−1)^(p/k)``
(Söderlind 2002's PI form, diffrax's ``PIDController`` with ``dcoeff = 0``), ``k`` the order of
the local error; ``save_at`` times are hit exactly by shortening the step that would cross them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["PIController"]

Tensor = torch.Tensor


@dataclass(frozen=True)
class PIController:
    """Step-size control for :func:`coupled_sde.solve` (``adaptive=``).

    ``rtol``/``atol``: error tolerances; ``dt0``: the first trial step (default: the grid's first
    step); ``pcoeff``/``icoeff``: proportional and integral gains (0.1/0.3 is diffrax's advice for
    SDEs); ``safety``, ``factor_min``, ``factor_max``: bounds on the change per step; ``dt_min``:
    steps at this size are accepted whatever their error; ``max_steps``: accepted plus rejected.
    """

    rtol: float = 1e-3
    atol: float = 1e-6
    dt0: float | None = None
    pcoeff: float = 0.1
    icoeff: float = 0.3
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    dt_min: float = 0.0
    max_steps: int = 100_000

    def __post_init__(self) -> None:
        if not (self.rtol >= 0 and self.atol >= 0 and self.rtol + self.atol > 0):
            raise ValueError(f"need rtol, atol >= 0 and not both 0, got rtol={self.rtol}, atol={self.atol}")
        if self.dt0 is not None and not self.dt0 > 0:
            raise ValueError(f"dt0 must be positive (the direction comes from the grid), got {self.dt0}")


def _norm(err: Tensor, y: Tensor, y1: Tensor, c: PIController) -> float:
    scale = torch.maximum(y.abs(), y1.abs()).mul_(c.rtol).add_(c.atol)
    return float((err / scale).pow(2).mean().sqrt())


def adaptive_loop(c: PIController, integ, sys, driver, grid, y: Tensor, save_at: Sequence[float] | str | None):
    """Run adaptive steps from ``grid.t0`` to ``grid.t1``; returns
    ``(y, save_times, saved_states, n_accepted, n_rejected, accepted_times)``."""
    t0, t1 = grid.t0, grid.t1
    sign = 1.0 if t1 > t0 else -1.0
    save_all = isinstance(save_at, str)
    if save_all and save_at != "all":
        raise ValueError(f"save_at must be 'all', None or a sequence of times, got {save_at!r}")
    save: list[float] = [] if save_at is None or save_all else sorted({float(s) for s in save_at}, key=lambda s: sign * s)
    for s in save:
        if sign * (s - t0) < 0 or sign * (t1 - s) < 0:
            raise ValueError(f"save_at time {s!r} lies outside the span [{t0!r}, {t1!r}]")
    targets = [s for s in save if s != t0]
    if not targets or targets[-1] != t1:
        targets.append(t1)
    saved = [y] if save_all or (save and save[0] == t0) else []
    save_set = set(save)
    h = abs(c.dt0 if c.dt0 is not None else grid[1] - grid[0])
    k = integ.info.strong_order + 0.5
    b1, b2 = (c.pcoeff + c.icoeff) / k, c.pcoeff / k
    t, prev, acc, rej, times, ti = t0, 1.0, 0, 0, [t0], 0
    while ti < len(targets):
        if acc + rej >= c.max_steps:
            raise RuntimeError(
                f"adaptive solve exceeded max_steps={c.max_steps} at t={t:.6g} (loosen rtol/atol or raise max_steps)"
            )
        target = targets[ti]
        remaining = abs(target - t)
        landing = h >= remaining * (1 - 1e-12)  # the step reaches (or would cross) the next save time: land on it
        dt = sign * (remaining if landing else h)
        sys.step_index, sys.step_time = acc, t
        y1, err = integ.step_with_error(sys, t, dt, y, driver.interval_noise(t, dt, y))
        e = _norm(err, y, y1, c)
        if not math.isfinite(e):
            e = math.inf
        if e == 0.0:
            factor = c.factor_max
        elif math.isinf(e):
            factor = c.factor_min
        else:
            factor = min(c.factor_max, max(c.factor_min, c.safety * e ** (-b1) * prev**b2))
        if e <= 1.0 or abs(dt) <= c.dt_min:
            acc += 1
            t = target if landing else t + dt
            y = y1
            times.append(t)
            prev = max(e, 1e-4)
            if landing:
                ti += 1
            if save_all or (landing and t in save_set):
                saved.append(y)
            proposal = abs(dt) * factor
            if landing and abs(dt) < h:  # a step shortened to land does not shrink the next one
                proposal = max(proposal, h * min(factor, 1.0))
            h = max(proposal, c.dt_min)
        else:
            rej += 1
            h = max(abs(dt) * min(factor, 0.9), c.dt_min)
    ts = times if save_all else [s for s in save if s in save_set]
    return y, ts, saved, acc, rej, times
