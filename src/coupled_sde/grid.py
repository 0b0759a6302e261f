"""Time grids: float64 on the host, increasing or decreasing, exactly N steps.

Design notes (against the peers: torchsde and diffrax):

* torchsde steps with float32 times and a ``dt``; on [0, 1] with dt = 1e-3 it takes 1001 steps and
  float32 endpoints a few ULPs outside the interval raise warnings or ``RecursionError``. Here a grid is
  an explicit list of float64 times: N steps means N + 1 points, and endpoints that are off by
  rounding are *snapped* to the values asked for.
* Diffusion models integrate noise level from 1 down to 0, so decreasing grids are first-class.
  ``dt`` is signed (negative on a decreasing grid); Brownian increments always have variance ``|dt|``.
* Refinement by an integer factor keeps every coarse point bit-for-bit, so a Brownian source built
  on the fine grid answers the coarse grid's queries with sums of fine increments (one path for a
  whole convergence study).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["TimeGrid"]


class TimeGrid:
    """A strictly monotone sequence of float64 times ``t_0, ..., t_N`` (N >= 1 steps)."""

    __slots__ = ("_times", "_list", "_index")

    def __init__(self, times: Sequence[float] | torch.Tensor) -> None:
        t = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
        if t.dim() != 1:
            raise ValueError(f"a time grid is a flat sequence of times, got shape {tuple(t.shape)} (a nested list?)")
        if t.numel() < 2:
            raise ValueError(f"a time grid needs at least 2 points, got {t.numel()}")
        if not torch.isfinite(t).all():
            raise ValueError("a time grid must contain finite times only")
        d = t[1:] - t[:-1]
        if (d == 0).any():
            i = int(torch.nonzero(d == 0)[0])
            raise ValueError(f"time grid has a repeated time {t[i].item()!r} at indices {i} and {i + 1}")
        if not ((d > 0).all() or (d < 0).all()):
            i = int(torch.nonzero(torch.sign(d) != torch.sign(d[0]))[0])
            raise ValueError(
                "time grid must be strictly increasing or strictly decreasing; direction changes "
                f"at index {i + 1} (t={t[i].item()!r} -> {t[i + 1].item()!r})"
            )
        self._times = t
        self._list: list[float] = t.tolist()
        self._index: dict[float, int] | None = None

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def uniform(cls, t0: float, t1: float, n_steps: int) -> TimeGrid:
        """``n_steps`` equal steps from ``t0`` to ``t1`` (either direction); endpoints exact."""
        n = _check_steps(n_steps)
        t = torch.linspace(float(t0), float(t1), n + 1, dtype=torch.float64)
        t[0], t[-1] = float(t0), float(t1)  # snap: linspace may be off by an ULP at the end
        return cls(t)

    @classmethod
    def rectified_flow(cls, n_steps: int, shift: float = 1.0, mu: float | None = None) -> TimeGrid:
        """Noise levels for rectified-flow sampling: ``sigma`` from 1 down to 0 in ``n_steps`` steps.

        ``s = linspace(1, 1/N, N)`` shifted either by a constant ``shift`` (SD3:
        ``shift s / (1 + (shift - 1) s)``) or, when ``mu`` is given, by FLUX's resolution-dependent
        exponential shift ``e^mu / (e^mu + 1/s - 1)`` (diffusers ``FlowMatchEulerDiscreteScheduler``
        with ``use_dynamic_shifting``); then ``sigma_N = 0`` is appended.
        """
        n = _check_steps(n_steps)
        s = torch.linspace(1.0, 1.0 / n, n, dtype=torch.float64)
        if mu is not None:
            sig = math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0))
        else:
            sig = shift * s / (1.0 + (shift - 1.0) * s)
        return cls(torch.cat([sig, torch.zeros(1, dtype=torch.float64)]))

    # ----------------------------------------------------------------------------- accessors
    @property
    def times(self) -> torch.Tensor:
        """The float64 times as a CPU tensor of shape ``(N + 1,)``."""
        return self._times

    @property
    def n_steps(self) -> int:
        return len(self._list) - 1

    @property
    def increasing(self) -> bool:
        return self._list[1] > self._list[0]

    @property
    def t0(self) -> float:
        return self._list[0]

    @property
    def t1(self) -> float:
        return self._list[-1]

    def __len__(self) -> int:
        return len(self._list)

    def __getitem__(self, i: int) -> float:
        return self._list[i]

    def __iter__(self):
        return iter(self._list)

    def tolist(self) -> list[float]:
        return list(self._list)

    def steps(self) -> list[tuple[float, float]]:
        """``[(t_i, dt_i)]`` with signed ``dt_i = t_{i+1} - t_i`` as Python floats (the solver's loop)."""
        L = self._list
        return [(L[i], L[i + 1] - L[i]) for i in range(len(L) - 1)]

    def index(self, t: float) -> int:
        """Position of a time that is *exactly* on the grid (``KeyError`` otherwise)."""
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self._list)}
        try:
            return self._index[float(t)]
        except KeyError:
            raise KeyError(f"time {t!r} is not a point of this grid") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeGrid) and self._list == other._list

    def __hash__(self) -> int:
        return hash(tuple(self._list))

    def __repr__(self) -> str:
        return f"TimeGrid({self.t0!r} -> {self.t1!r}, n_steps={self.n_steps})"

    # ----------------------------------------------------------------------------- derived grids
    def refine(self, factor: int) -> TimeGrid:
        """Split every step into ``factor`` equal sub-steps, keeping every original point exactly."""
        f = _check_steps(factor, "refinement factor")
        if f == 1:
            return self
        t = self._times
        frac = torch.arange(f, dtype=torch.float64) / f
        inner = t[:-1, None] + (t[1:] - t[:-1])[:, None] * frac[None, :]
        inner[:, 0] = t[:-1]  # exact copies of the coarse points
        return TimeGrid(torch.cat([inner.reshape(-1), t[-1:]]))

    def coarsen(self, factor: int) -> TimeGrid:
        """Every ``factor``-th point (the inverse of :meth:`refine`); ``n_steps`` must divide."""
        f = _check_steps(factor, "coarsening factor")
        if self.n_steps % f:
            raise ValueError(f"cannot coarsen {self.n_steps} steps by a factor {f}")
        return TimeGrid(self._times[::f])

    def sub(self, start: int = 0, stop: int | None = None) -> TimeGrid:
        """The grid from point ``start`` to point ``stop`` (inclusive, Python-style negatives)."""
        n = len(self._list)
        stop = n - 1 if stop is None else (stop + n if stop < 0 else stop)
        start = start + n if start < 0 else start
        if not 0 <= start < stop < n:
            raise ValueError(f"sub-grid [{start}, {stop}] is empty or outside a grid of {n} points")
        return TimeGrid(self._times[start : stop + 1])

    def is_subgrid_of(self, other: TimeGrid) -> bool:
        """True when every point of this grid is a point of ``other`` and directions agree."""
        if self.increasing != other.increasing:
            return False
        try:
            for t in self._list:
                other.index(t)
        except KeyError:
            return False
        return True


def _check_steps(n: int, what: str = "number of steps") -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return int(n)
