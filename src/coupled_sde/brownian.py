"""Brownian noise sources: each answers "the increment over the step from ``s`` to ``t``".

An increment has shape ``(S, B, *noise)``: ``S`` independent *streams* (a coupling turns them into
the K members' increments, see :mod:`coupled_sde.coupling`), ``B`` samples, and the per-sample noise
shape of the SDE. Its law is ``N(0, |t - s| I)`` in either direction: on a decreasing grid (diffusion
models integrate noise level from 1 to 0) it is the increment of the *backward* Brownian motion,
``W(s) - W(t)``.

Sources:

* :class:`GridBrownian` -- fixed grids, fast. Increments are a pure function of
  ``(seed, stream, sample, step)``, computed on the state's device by the counter-based generator of
  :mod:`coupled_sde.counter_rng`: the same seed gives the same noise whatever the batch composition, the
  query order and the device (A1111#5210, k-diffusion#25 are what happens otherwise), and per-sample
  seeds cost no more than an integer seed. Refining the grid by an integer factor gives the *same*
  path: build the source on the finest grid and every sub-grid's increments are sums of fine ones, so
  a convergence study compares step sizes on one path.
* :class:`~coupled_sde.brownian_tree.BrownianTree` -- any interval, any order, with space-time Lévy
  area: a virtual Brownian tree on the same generator.
* :class:`RecordedBrownian` -- replays recorded increments (drive an SDE with the noise of another
  run, or with backward increments read off a path by :func:`coupled_sde.reversal.backward_increments`).
* :class:`IntervalBrownian` -- an adapter over ``torchsde.BrownianInterval`` (optional extra
  ``torchsde``), kept for comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from ._optional import require
from .counter_rng import counter_normals, derive_keys, parse_seed, seed_words
from .grid import TimeGrid

__all__ = ["BrownianSource", "GridBrownian", "IntervalBrownian", "RecordedBrownian", "sample_seed"]

Tensor = torch.Tensor
_MASK64 = (1 << 64) - 1
#: Normal draws per seeding unit (a block of samples times a chunk of steps). Block and chunk sizes
#: depend on the noise shape only, never on the batch or the grid length, so values stay a pure
#: function of (seed, stream, sample, step).
_CHUNK = 1 << 13
#: Samples drawn together under an integer seed (small noise: one generator call serves many samples).
_BLOCK = 64


#: Normals per :meth:`GridBrownian.normals` call the solver makes with the counter generator: large
#: enough to amortise the ~30 tensor operations of a call, small enough to stay in cache.
_COUNTER_CHUNK = 1 << 18
#: Key domains: separate the streams of different uses of the same seed.
_DOMAIN_GRID_INT, _DOMAIN_GRID_PER_SAMPLE = 0x47524931, 0x47525053
#: Offset of the key domain of the space-time Lévy area's normals (independent of the increments').
_DOMAIN_LEVY = 0x4C455659


def grid_keys(
    int_seed: int | None,
    seed_list: Sequence[int] | None,
    batch_size: int,
    streams: int,
    device: torch.device | str,
    domain: int = 0,
) -> tuple[Tensor, Tensor]:
    """``(key, gamma)`` of shape ``(streams * batch_size, 1)``, stream-major: one counter stream per
    (stream, sample), a function of ``(seed, sample, stream)`` or ``(seeds[sample], stream)`` and ``domain``."""
    s = torch.arange(streams, dtype=torch.int64, device=device).view(streams, 1)
    if seed_list is None:
        lo, hi = seed_words([int_seed], device)
        b = torch.arange(batch_size, dtype=torch.int64, device=device).view(1, batch_size)
        key, gamma = derive_keys(lo.view(1, 1), hi.view(1, 1), b, s, (_DOMAIN_GRID_INT + domain) & 0xFFFFFFFF)
    else:
        lo, hi = seed_words(seed_list, device)
        key, gamma = derive_keys(lo.view(1, -1), hi.view(1, -1), 0, s, (_DOMAIN_GRID_PER_SAMPLE + domain) & 0xFFFFFFFF)
    return key.reshape(-1, 1), gamma.reshape(-1, 1)


def _block_samples(per_step: int) -> int:
    return max(1, min(_BLOCK, 1024 // per_step))


def _chunk_steps(per_step_all_rows: int) -> int:
    return max(1, _CHUNK // per_step_all_rows)


@runtime_checkable
class BrownianSource(Protocol):
    """Anything that answers increments over intervals."""

    shape: tuple[int, ...]  # (S, B, *noise)

    def increment(self, s: float, t: float) -> Tensor:
        """``W`` over the step from ``s`` to ``t``: shape :attr:`shape`, variance ``|t - s|``."""

    def on_grid(self, grid: TimeGrid) -> Tensor:
        """All increments along ``grid`` as one tensor ``(S, B, n_steps, *noise)``."""


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(*keys: int) -> int:
    """A 63-bit generator seed that is a pure function of the integer ``keys`` (splitmix64 chain)."""
    h = 0x243F6A8885A308D3
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h >> 1


class _Tabulated:
    """Shared logic of sources whose increments live on a grid: sums over sub-steps."""

    grid: TimeGrid
    shape: tuple[int, ...]

    def _table(self) -> Tensor:  # (S, B, N, *noise), already scaled by sqrt|dt|
        raise NotImplementedError

    def increment(self, s: float, t: float) -> Tensor:
        i, j = self.grid.index(s), self.grid.index(t)
        if j <= i:
            raise ValueError(f"the step from {s!r} to {t!r} goes against the direction of the source's grid")
        return self._table()[:, :, i:j].sum(2)

    def on_grid(self, grid: TimeGrid) -> Tensor:
        table = self._table()
        if grid == self.grid:
            return table
        if grid.increasing != self.grid.increasing or not grid.is_subgrid_of(self.grid):
            raise ValueError(
                f"{grid!r} is not a sub-grid of the Brownian source's {self.grid!r}: build the source on the "
                "finest grid (TimeGrid.refine keeps coarse points exactly)"
            )
        idx = [self.grid.index(t) for t in grid]
        lengths = {b - a for a, b in zip(idx[:-1], idx[1:])}
        if len(lengths) == 1 and idx[0] == 0 and idx[-1] == self.grid.n_steps:
            r = lengths.pop()  # uniform refinement: one reshape-sum
            return table.reshape(table.shape[:2] + (grid.n_steps, r) + table.shape[3:]).sum(3)
        return torch.stack([table[:, :, a:b].sum(2) for a, b in zip(idx[:-1], idx[1:])], dim=2)


class GridBrownian(_Tabulated):
    """Counter-based Brownian increments on a fixed grid, with per-sample seeds.

    Step ``i``'s standard normals for sample ``b`` and stream ``s`` are a pure function of
    ``(seed, b, s, i)`` (or ``(seeds[b], s, i)``), computed by :mod:`coupled_sde.counter_rng` directly on
    ``device`` in ``dtype``: no ``torch.Generator``, no global RNG, no CPU-to-device copy, the same
    values whatever the batch composition, the query order, the grid length, or the device (integer
    bits identical; the float transform agrees to a few ulp across devices).

    Parameters
    ----------
    grid:
        The finest grid the source will be queried on (any sub-grid may be queried too).
    batch_size, noise_shape:
        ``B`` and the per-sample noise shape (``SDE.brownian_shape(event)``).
    seed:
        An integer in ``[0, 2**64)`` (Python/numpy integer or 0-d tensor; sample ``b``'s noise is a
        function of ``(seed, b)``: adding samples to the batch leaves the others' noise unchanged) or one
        seed per sample (a sequence, numpy array or 1-d tensor; sample ``b``'s noise is a function of
        ``seeds[b]`` alone, wherever it stands in the batch).
    streams:
        Independent streams ``S`` (a coupling declares how many it needs).
    generator:
        ``"counter"`` (default). ``"torch"`` reproduces the values of coupled-sde 0.1 (seeded
        ``torch.randn`` on the CPU, copied to ``device``; per-sample seeds cost one generator call per
        sample and chunk): keep it only to replay results recorded with that version.
    """

    def __init__(
        self,
        grid: TimeGrid,
        batch_size: int | None = None,
        noise_shape: Sequence[int] = (),
        seed: int | Sequence[int] = 0,
        streams: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: str = "counter",
    ) -> None:
        if generator not in ("counter", "torch"):
            raise ValueError(f"generator must be 'counter' or 'torch', got {generator!r}")
        self.grid = grid
        seed = parse_seed(seed)
        if isinstance(seed, int):
            if batch_size is None:
                raise ValueError("an integer seed needs batch_size (sample b's noise is a function of (seed, b))")
            self._int_seed, self._seed_list, self.batch_size = seed, None, int(batch_size)
        else:
            self._int_seed, self._seed_list = None, seed
            if batch_size is not None and len(seed) != batch_size:
                raise ValueError(f"got {len(seed)} per-sample seeds for a batch of {batch_size}")
            self.batch_size = len(seed)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        self.noise_shape = tuple(int(n) for n in noise_shape)
        self.streams = int(streams)
        if self.streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        self.dtype, self.device = dtype, torch.device(device)
        self.generator = generator
        self.shape = (self.streams, self.batch_size) + self.noise_shape
        self._cache: Tensor | None = None
        self._scale = torch.tensor([math.sqrt(abs(dt)) for _, dt in grid.steps()], dtype=torch.float64)
        if generator == "counter":
            self._scale = self._scale.to(self.device)
        self._per_step = max(1, math.prod(self.noise_shape))
        if generator == "torch":
            self._gen = torch.Generator()
            self._rows = 1 if self._seed_list is not None else _block_samples(self._per_step)
            self._blocks = self._make_blocks()
        else:
            self._key, self._gamma = grid_keys(self._int_seed, self._seed_list, self.batch_size, self.streams, self.device)

    def _table(self) -> Tensor:
        if self._cache is None:
            self._cache = self._generate()
        return self._cache

    def _generate(self) -> Tensor:
        return self.steps(0, self.grid.n_steps)

    def steps(self, i0: int, i1: int) -> Tensor:
        """Increments of steps ``[i0, i1)`` of the source's own grid: ``(S, B, i1 - i0, *noise)``.

        Generated on demand; the solver walks the grid chunk by chunk so that no large table is
        allocated (fresh multi-megabyte buffers cost more in page faults than the draws themselves).
        """
        return self.normals(i0, i1, scaled=True)

    def normals(self, i0: int, i1: int, scaled: bool = False) -> Tensor:
        """The standard normal draws behind steps ``[i0, i1)`` (``steps`` = these times ``sqrt|dt|``)."""
        if not 0 <= i0 <= i1 <= self.grid.n_steps:
            raise IndexError(f"steps [{i0}, {i1}) are outside the grid's {self.grid.n_steps} steps")
        gen_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        if self.generator == "torch":
            out = self._normals_torch(i0, i1, gen_dtype)
        else:
            P = self._per_step
            z = counter_normals(self._key, self._gamma, i0 * P, (i1 - i0) * P, gen_dtype)
            out = z.view((self.streams, self.batch_size, i1 - i0) + self.noise_shape)
        if scaled:
            scale = self._scale[i0:i1].to(device=out.device, dtype=gen_dtype)
            out = out * scale.reshape((1, 1, i1 - i0) + (1,) * len(self.noise_shape))
        return out.to(device=self.device, dtype=self.dtype)

    def _normals_torch(self, i0: int, i1: int, gen_dtype: torch.dtype) -> Tensor:
        """coupled-sde 0.1's values: seeded CPU ``torch.randn`` per (stream, block of samples, chunk)."""
        out = torch.empty((self.streams, self.batch_size, i1 - i0) + self.noise_shape, dtype=gen_dtype)
        g = self._gen
        rows, chunk = self._rows, self.chunk_steps()
        for s in range(self.streams):
            for b0, b1, key in self._blocks:
                for c in range(i0 // chunk, (i1 - 1) // chunk + 1):
                    # Always draw a *full* chunk: torch.randn's values depend on the requested size, and
                    # step i's value must not depend on how many steps are asked for.
                    g.manual_seed(_splitmix64(key ^ (s << 40) ^ c) >> 1)
                    a, b = max(i0, c * chunk), min(i1, (c + 1) * chunk)
                    dst = out[s, b0:b1, a - i0 : b - i0]
                    # Draw in place when the destination is a contiguous full block (the solver's case);
                    # randn into a strided view would give other values than into a fresh tensor.
                    if b1 - b0 == rows and b - a == chunk and dst.is_contiguous():
                        torch.randn(dst.shape, generator=g, dtype=gen_dtype, out=dst)
                    else:
                        block = torch.randn((rows, chunk) + self.noise_shape, generator=g, dtype=gen_dtype)
                        dst.copy_(block[: b1 - b0, a - c * chunk : b - c * chunk])
        return out

    def chunk_steps(self) -> int:
        """How many steps one call of :meth:`normals` should cover (the natural slice for iterating)."""
        if self.generator == "torch":
            return _chunk_steps(self._per_step * self._rows)
        steps = max(1, _COUNTER_CHUNK // (self._per_step * self.batch_size * self.streams))
        align = 32 // math.gcd(32, self._per_step)  # whole blocks of 32 normals per call: nothing drawn twice
        return max(align, steps // align * align)

    def _make_blocks(self) -> list[tuple[int, int, int]]:
        """``(b0, b1, key)``: runs of samples drawn together. With an integer seed, samples are grouped
        in fixed blocks of absolute indices whose key is a function of (seed, block), so a sample's
        noise does not depend on the batch around it; with per-sample seeds each sample is a block."""
        if self._seed_list is not None:
            return [(b, b + 1, sample_seed(k, 0)) for b, k in enumerate(self._seed_list)]
        rows = self._rows
        return [
            (b0, min(self.batch_size, b0 + rows), sample_seed(self._int_seed, b0 // rows, 0x5EED))
            for b0 in range(0, self.batch_size, rows)
        ]

    # ------------------------------------------------------------------ space-time Lévy area
    def levy_normals(self, i0: int, i1: int) -> Tensor:
        """Standard normals behind the space-time Lévy area of steps ``[i0, i1)``: step ``k``'s area is
        ``sqrt(|dt_k| / 12)`` times these, independent of its increment (a separate key domain)."""
        if self.generator != "counter":
            raise ValueError("the space-time Lévy area needs the counter generator (generator='counter')")
        if not 0 <= i0 <= i1 <= self.grid.n_steps:
            raise IndexError(f"steps [{i0}, {i1}) are outside the grid's {self.grid.n_steps} steps")
        if not hasattr(self, "_levy_keys"):
            self._levy_keys = grid_keys(self._int_seed, self._seed_list, self.batch_size, self.streams, self.device, _DOMAIN_LEVY)
        gen_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        P = self._per_step
        z = counter_normals(*self._levy_keys, i0 * P, (i1 - i0) * P, gen_dtype)
        return z.view((self.streams, self.batch_size, i1 - i0) + self.noise_shape)

    def _levy_table(self) -> tuple[Tensor, Tensor]:
        """``(dW, H)`` of every step of the source's own grid, float64 ``(S, B, N, *noise)``."""
        if getattr(self, "_levy_cache", None) is None:
            n = self.grid.n_steps
            h = torch.tensor([abs(dt) for _, dt in self.grid.steps()], dtype=torch.float64, device=self.device)
            shape = (1, 1, n) + (1,) * len(self.noise_shape)
            dw = self.normals(0, n).to(torch.float64) * h.sqrt().view(shape)
            H = self.levy_normals(0, n).to(torch.float64) * (h / 12).sqrt().view(shape)
            self._levy_cache = (dw, H, h)
        return self._levy_cache[0], self._levy_cache[1]

    def _levy_span(self, i: int, j: int) -> tuple[Tensor, Tensor]:
        """``(dW, H)`` over own-grid steps ``[i, j)`` composed from the steps' own: with ``B`` the motion
        in the grid's direction of travel, ``int (B_u - B_a) du = sum_k h_k (H_k + dW_k/2 + (B_k - B_a))``,
        then ``H = (1/h) int (B_u - B_a) du - dW/2``."""
        dw, H = self._levy_table()
        h = self._levy_cache[2][i:j]
        shape = (1, 1, j - i) + (1,) * len(self.noise_shape)
        d, a = dw[:, :, i:j], H[:, :, i:j]
        before = d.cumsum(2) - d  # B at each step's start, relative to B at step i
        area = ((a + 0.5 * d + before) * h.view(shape)).sum(2)
        total = d.sum(2)
        return total, area / float(h.sum()) - 0.5 * total

    def space_time_levy_area(self, s: float, t: float) -> tuple[Tensor, Tensor]:
        """``(dW, H)`` over the step from grid point ``s`` to grid point ``t`` (any points of the grid in its
        direction): ``H = (1/h) int (B_u - B_s - (u - s)/h dW) du`` of the motion ``B`` the source's increments
        belong to (on a decreasing grid, the backward motion, as :class:`~coupled_sde.brownian_tree.BrownianTree`).
        Each own step's area is drawn independently of its increment, ``N(0, |dt|/12)``; longer steps compose
        them exactly, so a sub-grid sees the same path *and* the same areas."""
        i, j = self.grid.index(s), self.grid.index(t)
        if j <= i:
            raise ValueError(f"the step from {s!r} to {t!r} goes against the direction of the source's grid")
        dw, H = self._levy_span(i, j)
        return dw.to(self.dtype), H.to(self.dtype)

    def levy_on_grid(self, grid: TimeGrid) -> tuple[Tensor, Tensor]:
        """``(dW, H)`` of every step of ``grid`` (the source's grid or a sub-grid): two ``(S, B, n, *noise)``."""
        if grid != self.grid and (grid.increasing != self.grid.increasing or not grid.is_subgrid_of(self.grid)):
            raise ValueError(f"{grid!r} is not a sub-grid of the Brownian source's {self.grid!r}")
        idx = [self.grid.index(u) for u in grid]
        pairs = [self._levy_span(a, b) for a, b in zip(idx[:-1], idx[1:])]
        return torch.stack([p[0] for p in pairs], 2).to(self.dtype), torch.stack([p[1] for p in pairs], 2).to(self.dtype)

    def with_seed(self, seed: int | Sequence[int]) -> GridBrownian:
        """The same source with other seeds (Monte Carlo over independent paths)."""
        seed = parse_seed(seed)
        batch = self.batch_size if isinstance(seed, int) else None
        return GridBrownian(self.grid, batch, self.noise_shape, seed, self.streams, self.dtype, self.device, self.generator)


class RecordedBrownian(_Tabulated):
    """Replays recorded increments on a grid.

    ``increments`` has shape ``(S, B, n_steps, *noise)``, the layout of :meth:`GridBrownian.on_grid`
    (use ``increments.unsqueeze(0)`` for a single stream ``(B, n_steps, *noise)``).
    """

    def __init__(self, grid: TimeGrid, increments: Tensor) -> None:
        if increments.dim() < 3 or increments.shape[2] != grid.n_steps:
            raise ValueError(
                f"recorded increments must have shape (S, B, n_steps={grid.n_steps}, *noise); got {tuple(increments.shape)}"
            )
        self.grid = grid
        self._inc = increments
        self.shape = (increments.shape[0], increments.shape[1]) + tuple(increments.shape[3:])

    def _table(self) -> Tensor:
        return self._inc

    @classmethod
    def from_source(cls, source: BrownianSource, grid: TimeGrid) -> RecordedBrownian:
        """Record what another source answers along ``grid``."""
        return cls(grid, source.on_grid(grid).clone())


class IntervalBrownian:
    """Adapter over ``torchsde.BrownianInterval``, kept as an optional comparison (extra ``torchsde``).

    One entropy seeds the whole ``(S, B, *noise)`` tensor (torchsde has no per-sample seeds), and the
    path it produces depends on the order of queries; prefer :class:`GridBrownian` on fixed grids and
    :class:`~coupled_sde.brownian_tree.BrownianTree` for arbitrary intervals. Raises
    :class:`~coupled_sde.errors.MissingDependencyError` when torchsde is not installed.
    """

    def __init__(
        self,
        t0: float,
        t1: float,
        batch_size: int,
        noise_shape: Sequence[int] = (),
        seed: int = 0,
        streams: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        dt: float | None = None,
    ) -> None:
        require("torchsde", "torchsde")  # an optional comparison, not a core dependency
        import torchsde

        lo, hi = min(t0, t1), max(t0, t1)
        self.shape = (int(streams), int(batch_size)) + tuple(int(n) for n in noise_shape)
        self._bm = torchsde.BrownianInterval(
            t0=lo,
            t1=hi,
            size=self.shape,
            dtype=dtype,
            device=device,
            entropy=seed,
            dt=dt,
            levy_area_approximation="none",
        )
        self._lo, self._hi = lo, hi
        self._lead: tuple[int, ...] = ()  # the interval's size is the whole (S, B, *noise)

    @classmethod
    def wrap(cls, bm: Any) -> IntervalBrownian:
        """Our source over an existing ``torchsde.BrownianInterval`` of size ``(B, *noise)`` (one stream),
        so that :func:`~coupled_sde.solve.solve` and ``torchsde.sdeint`` read the very same path. With
        the interval's ``levy_area_approximation="space-time"`` it also answers
        :meth:`space_time_levy_area` (SRA1)."""
        self = cls.__new__(cls)
        self._bm, self._lo, self._hi = bm, float(bm._start), float(bm._end)
        self._lead = (1,)  # torchsde's size has no streams axis
        self.shape = self._lead + tuple(bm.shape)
        return self

    def _query(self, s: float, t: float, **kwargs: Any) -> Any:
        a, b = (s, t) if s <= t else (t, s)
        # Clamp ULP-level excursions instead of failing (torchsde#152): grids are float64 and snapped.
        a, b = max(a, self._lo), min(b, self._hi)
        return self._bm(a, b, **kwargs)

    def increment(self, s: float, t: float) -> Tensor:
        dw = self._query(s, t)
        return dw.reshape(self.shape) if self._lead else dw

    def space_time_levy_area(self, s: float, t: float) -> tuple[Tensor, Tensor]:
        """``(dW, H)`` over ``[s, t]``, ``H = U / h - dW / 2`` from torchsde's ``U = int_s^t (W_r - W_s) dr``
        (needs ``levy_area_approximation="space-time"``: :meth:`wrap` such an interval)."""
        dw, u = self._query(s, t, return_U=True)
        h = abs(t - s)
        return dw.reshape(self.shape), (u / h - 0.5 * dw).reshape(self.shape)

    def on_grid(self, grid: TimeGrid) -> Tensor:
        return torch.stack([self.increment(s, s + dt) for s, dt in grid.steps()], dim=2)
