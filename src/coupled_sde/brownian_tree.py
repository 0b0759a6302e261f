"""A Brownian tree: increments and space-time Lévy area over any interval, as a pure function of the seed.

:class:`BrownianTree` answers ``W(t) - W(s)`` (and, with ``levy_area=True``, the space-time Lévy area
``H``) for *any* ``s, t`` in ``[t0, t1]``, in any order, without a grid fixed in advance -- what adaptive
step-size control needs when a rejected step re-queries a shorter interval of the same path.

Construction (a virtual Brownian tree, Gaines & Lyons 1997; as diffrax's ``VirtualBrownianTree``): the
value at ``t1`` is drawn first, then ``[t0, t1]`` is bisected dyadically; the value at the midpoint of a
dyadic interval is drawn from the Brownian bridge conditioned on the interval's endpoints, with normals
that are a pure function of ``(seed, sample, stream, node)`` (:mod:`coupled_sde.counter_rng`). A query point
descends until its dyadic interval is no longer than ``tol``, then takes the bridge value at the point
itself from that leaf's own normals. Nothing is stateful: the path does not depend on the order of
queries, on the batch around a sample, or on the device (unlike torchsde's ``BrownianInterval``, whose
path depends on the query order, and with per-sample seeds, which torchsde has not). A cache of the last
descent makes sequential queries cheap; it never changes a value.

Space-time Lévy area. Alongside ``W`` the tree carries ``K(t) = int_{t0}^t W(u) du``; over ``[s, t]``,
``h = t - s``, the space-time Lévy area is ``H = (1/h) int_s^t (W_u - W_s - (u - s)/h dW) du
= (K(t) - K(s))/h - W(s) - dW/2`` with ``H ~ N(0, h/12)`` independent of ``dW`` (Foster 2020, "Numerical
approximation of SDEs and the stochastic Taylor expansion", DPhil thesis, Oxford; diffrax's
``SpaceTimeLevyArea``). Each bisection draws ``(W, K)`` at the midpoint jointly from their Gaussian law
given the endpoints, so the pair stays exact at every node (the midpoint rule reduces to
``W(m) - W(a) = dW/2 + 3H/2 + (sqrt(h)/4) Z``, Foster's bridge). Because ``W`` and ``K`` are point values,
increments and areas are exactly additive across adjacent intervals.

Accuracy: at dyadic nodes (down to ``tol``) the joint law is exact; between two points of the same leaf
the bridge uses one normal, so increments over intervals shorter than ``tol`` are approximate (error of
order ``sqrt(tol)``, as in diffrax). Values are computed in float64 and returned in ``dtype``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

from .brownian import grid_keys
from .counter_rng import box_muller, counter_bits, parse_seed
from .grid import TimeGrid

__all__ = ["BrownianTree"]

Tensor = torch.Tensor
_DOMAIN_TREE = 0x7E3E0001
_MAX_DEPTH = 40


@lru_cache(maxsize=4096)
def _bridge(x: float, levy: bool) -> tuple[float, ...]:
    """Coefficients of the law of ``(W'(x), K'(x))`` given ``(W'(1), K'(1))`` for a Brownian motion on
    ``[0, 1]`` started at 0, ``K'(x) = int_0^x W'``: mean ``M @ Y``, covariance ``L L^T``.

    Without Lévy area: ``(m, l)`` with ``W'(x) | W'(1) ~ N(m W'(1), l^2)``. With it, ``(M11, M12, M21, M22,
    L11, L21, L22)`` from the covariances ``Cov(W_s, W_t) = min(s, t)``, ``Cov(W_s, K_t) = s t - s^2/2``
    (``s <= t``) or ``t^2/2``, ``Cov(K_s, K_t) = s^2 t/2 - s^3/6`` (``s <= t``).
    """
    if not levy:
        return x, math.sqrt(max(x * (1.0 - x), 0.0))
    # Sigma_YY^-1 = [[4, -6], [-6, 12]]; M = Sigma_XY Sigma_YY^-1 (worked out in closed form)
    m11, m12 = 3 * x * x - 2 * x, 6 * x - 6 * x * x
    m21, m22 = x**3 - x * x, 3 * x * x - 2 * x**3
    sxy = ((x, x - x * x / 2), (x * x / 2, x * x / 2 - x**3 / 6))
    c11 = x - (m11 * sxy[0][0] + m12 * sxy[0][1])
    c21 = x * x / 2 - (m21 * sxy[0][0] + m22 * sxy[0][1])
    c22 = x**3 / 3 - (m21 * sxy[1][0] + m22 * sxy[1][1])
    l11 = math.sqrt(max(c11, 0.0))
    l21 = c21 / l11 if l11 > 1e-300 else 0.0
    l22 = math.sqrt(max(c22 - l21 * l21, 0.0))
    return m11, m12, m21, m22, l11, l21, l22


class BrownianTree:
    """Brownian increments (and space-time Lévy area) over any interval of ``[t0, t1]``.

    Parameters
    ----------
    t0, t1:
        The time interval (either order; queries may run in either direction).
    batch_size, noise_shape, seed, streams:
        As :class:`~coupled_sde.brownian.GridBrownian`: an integer seed (sample ``b``'s path is a function
        of ``(seed, b)``) or one seed per sample (a function of ``seeds[b]`` alone).
    tol:
        Leaf size: dyadic refinement stops at intervals no longer than ``tol`` (default
        ``|t1 - t0| * 2**-20``). Smaller is more exact and costs one bisection per halving.
    levy_area:
        Carry ``int W dt`` jointly with ``W`` so that :meth:`space_time_levy_area` can answer (default).
        ``False`` draws ``W`` alone, for about half the cost per query; its path is a different (equally
        Brownian) one for the same seed, since the joint bridge conditions each midpoint on the area too.
    dtype, device:
        Of the returned increments (computed in float64 on ``device``).
    """

    def __init__(
        self,
        t0: float,
        t1: float,
        batch_size: int | None = None,
        noise_shape: Sequence[int] = (),
        seed: int | Sequence[int] = 0,
        streams: int = 1,
        tol: float | None = None,
        levy_area: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        lo, hi = float(min(t0, t1)), float(max(t0, t1))
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            raise ValueError(f"the tree needs a finite interval of positive length, got [{t0!r}, {t1!r}]")
        seed = parse_seed(seed)
        if isinstance(seed, int):
            if batch_size is None:
                raise ValueError("an integer seed needs batch_size (sample b's path is a function of (seed, b))")
            self.batch_size, int_seed, seed_list = int(batch_size), seed, None
        else:
            if batch_size is not None and len(seed) != batch_size:
                raise ValueError(f"got {len(seed)} per-sample seeds for a batch of {batch_size}")
            self.batch_size, int_seed, seed_list = len(seed), None, seed
        self.t0, self.t1, self._T = lo, hi, hi - lo
        tol = self._T * 2.0**-20 if tol is None else float(tol)
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol!r}")
        self.tol = tol
        self.depth = min(_MAX_DEPTH, max(0, math.ceil(math.log2(self._T / tol))))
        self.levy_area = bool(levy_area)
        self.noise_shape = tuple(int(n) for n in noise_shape)
        self.streams = int(streams)
        self.shape = (self.streams, self.batch_size) + self.noise_shape
        self.dtype, self.device = dtype, torch.device(device)
        self._seed = seed
        self._P = max(1, math.prod(self.noise_shape))
        R = self.streams * self.batch_size
        self._key, self._gamma = grid_keys(int_seed, seed_list, self.batch_size, self.streams, self.device, _DOMAIN_TREE)
        # Root: W(t1) and K(t1) from node 0's normals.
        z1, z2 = self._normals([0])
        T = self._T
        w1 = math.sqrt(T) * z1[:, 0]
        zero = torch.zeros((R, self._P), dtype=torch.float64, device=self.device)
        if self.levy_area:
            k1 = T * math.sqrt(T / 12.0) * z2[:, 0] + 0.5 * T * w1
            self._path: list[tuple[int, Tensor, Tensor | None, Tensor, Tensor | None]] = [(0, zero, zero, w1, k1)]
        else:
            self._path = [(0, zero, None, w1, None)]
        self._last: tuple[float, Tensor, Tensor | None] | None = None

    # ------------------------------------------------------------------ randomness
    def _normals(self, ids: list[int]) -> tuple[Tensor, Tensor]:
        """Two standard normals per (stream-sample, node, noise element): each ``(R, len(ids), P)``."""
        P = self._P
        ids_t = torch.tensor(ids, dtype=torch.int64, device=self.device).view(-1, 1)
        index = (ids_t * P + torch.arange(P, dtype=torch.int64, device=self.device)).view(-1)
        # float32 Box-Muller (the normals are inputs; the bridge arithmetic below is float64)
        z1, z2 = box_muller(counter_bits(self._key, self._gamma, index), torch.float32)
        return z1.double().view(-1, len(ids), P), z2.double().view(-1, len(ids), P)

    # ------------------------------------------------------------------ point values
    def _split(self, h: float, x: float, wa: Tensor, ka: Tensor | None, wb: Tensor, kb: Tensor | None, z1: Tensor, z2: Tensor):
        """``(W, K)`` at ``a + x h`` given the values at ``a`` and ``b = a + h`` and two normals."""
        if not self.levy_area:
            m, sd = _bridge(x, False)
            return torch.lerp(wa, wb, m).add_(z1, alpha=sd * math.sqrt(h)), None
        m11, m12, m21, m22, l11, l21, l22 = _bridge(x, True)
        sh = math.sqrt(h)
        # With y1 = (wb - wa)/sqrt(h), y2 = (kb - ka - h wa)/h^1.5 (normalised bridge coordinates):
        #   w = wa + sqrt(h) (m11 y1 + m12 y2 + l11 z1),  k = ka + x h wa + h^1.5 (m21 y1 + m22 y2 + l21 z1 + l22 z2)
        # expanded into fused multiply-adds on the endpoint values.
        dk = kb - ka
        w = torch.add(wb, wa, alpha=-1.0).mul_(m11).add_(dk, alpha=m12 / h).add_(wa, alpha=1.0 - m12).add_(z1, alpha=sh * l11)
        k = torch.add(wb, wa, alpha=-1.0).mul_(h * m21).add_(dk, alpha=m22).add_(wa, alpha=x * h - h * m22)
        k.add_(ka).add_(z1, alpha=h * sh * l21).add_(z2, alpha=h * sh * l22)
        return w, k

    def _locate(self, u: float) -> float:
        lo, hi = self.t0, self.t1
        slack = 1e-9 * self._T  # ULP-level excursions of float32 grids (torchsde#152): clamp, don't fail
        if not (lo - slack <= u <= hi + slack):
            raise ValueError(f"time {u!r} is outside the Brownian tree's interval [{lo!r}, {hi!r}]")
        return min(max((u - lo) / self._T, 0.0), 1.0)

    def _point(self, u: float) -> tuple[Tensor, Tensor | None]:
        """``(W(u), K(u))`` as float64 ``(R, P)`` tensors (``K`` is None without Lévy area)."""
        if self._last is not None and self._last[0] == u:
            return self._last[1], self._last[2]
        x = self._locate(u)
        # The dyadic interval of x at each depth (the last one for x = 1).
        js = [min(math.floor(x * 2.0**d), 2**d - 1) for d in range(self.depth + 1)]
        path = self._path
        p = 1
        while p < len(path) and p <= self.depth and path[p][0] == js[p]:
            p += 1
        del path[p:]
        new = list(range(p - 1, self.depth))  # depths whose midpoints we need, from the cached level on
        # Midpoint of dyadic interval (d, j): node 2**d + j (d < depth). A leaf (depth, j) draws its point
        # bridge from node 2**depth + j, an id no midpoint uses: one counter call serves the whole descent.
        leaf_id = 2**self.depth + js[self.depth]
        z1, z2 = self._normals([2**d + js[d] for d in new] + [leaf_id])
        z1, z2 = z1.unbind(1), z2.unbind(1)
        for n, d in enumerate([*new, self.depth]):
            j, wa, ka, wb, kb = path[d]
            scaled = x * 2.0**d - j  # position inside interval (d, j), in [0, 1]
            if scaled == 0.0:
                out = (wa, ka)
                break
            if scaled == 1.0:
                out = (wb, kb)
                break
            if d == self.depth:  # leaf: the bridge at x itself, from the leaf's own normals
                h = self._T * 2.0**-d
                out = self._split(h, scaled, wa, ka, wb, kb, z1[-1], z2[-1])
                break
            h = self._T * 2.0**-d
            wm, km = self._split(h, 0.5, wa, ka, wb, kb, z1[n], z2[n])
            child = js[d + 1]
            path.append((child, wa, ka, wm, km) if child == 2 * j else (child, wm, km, wb, kb))
        self._last = (u, out[0], out[1])
        return out

    # ------------------------------------------------------------------ queries
    def _out(self, v: Tensor) -> Tensor:
        return v.view(self.shape).to(self.dtype)

    def increment(self, s: float, t: float) -> Tensor:
        """``W`` over the step from ``s`` to ``t``: ``W(max) - W(min)``, shape :attr:`shape`, variance ``|t - s|``
        (on a decreasing step, the increment of the backward Brownian motion, as the other sources)."""
        a, b = (float(s), float(t)) if s <= t else (float(t), float(s))
        wa, _ = self._point(a)
        wb, _ = self._point(b)
        return self._out(wb - wa)

    def space_time_levy_area(self, s: float, t: float) -> tuple[Tensor, Tensor]:
        """``(dW, H)`` over the step from ``s`` to ``t``: ``H = (1/h) int (W_u - W_s - (u - s)/h dW) du``,
        ``H ~ N(0, h/12)`` independent of ``dW``. On a decreasing step both belong to the backward
        Brownian motion (``H`` changes sign)."""
        if not self.levy_area:
            raise ValueError("this BrownianTree was built without levy_area=True")
        a, b = (float(s), float(t)) if s <= t else (float(t), float(s))
        h = b - a
        if h <= 0:
            raise ValueError(f"the step from {s!r} to {t!r} has zero length")
        wa, ka = self._point(a)
        wb, kb = self._point(b)
        dw = wb - wa
        H = (kb - ka) / h - wa - 0.5 * dw
        if s > t:
            H = -H
        return self._out(dw), self._out(H)

    def on_grid(self, grid: TimeGrid) -> Tensor:
        """All increments along ``grid``: ``(S, B, n_steps, *noise)``."""
        vals = [self._point(float(u))[0] for u in grid]
        steps = [(vals[i + 1] - vals[i]) if grid.increasing else (vals[i] - vals[i + 1]) for i in range(grid.n_steps)]
        return torch.stack([self._out(v) for v in steps], dim=2)

    def with_seed(self, seed: int | Sequence[int]) -> BrownianTree:
        """The same tree with other seeds."""
        seed = parse_seed(seed)
        batch = self.batch_size if isinstance(seed, int) else None
        return BrownianTree(
            self.t0, self.t1, batch, self.noise_shape, seed, self.streams, self.tol, self.levy_area, self.dtype, self.device
        )
