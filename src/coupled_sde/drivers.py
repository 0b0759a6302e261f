"""Drivers: what moves the members at each step besides their drift.

An integrator is written against one stage primitive, :class:`StepNoise`: ``prod(g)`` / ``g_dw(t, y)``
(the diffusion at any stage times the step's increment) and ``land(y, f, dt, term)`` (a stage
``y + f dt + term``). Splitting the work this way lets one loop (:func:`coupled_sde.solve`) run

* SDEs driven by Brownian increments through a coupling (:class:`BrownianDriver`),
* ODEs (:class:`NoNoise`, g = 0),
* and systems whose member 0 is *pinned* to a given path while the other members are driven by the
  increments that path implies (:class:`PathDriver`): the residual form of sync-SDE
  (``docs/concepts.md``), for any integrator, with exact reconstruction.

Layout: inside the loop the K members' states are stored *flat*, ``(K * B, *event)``, member-major
(a view of the stacked ``(K, B, *event)``), so that a plain SDE's drift is called on the state itself
with no reshaping; drivers that need the member structure take views.
"""

from __future__ import annotations

import torch

from .brownian import BrownianSource, GridBrownian
from .brownian_tree import BrownianTree
from .coupling import Coupling, Synchronous
from .grid import TimeGrid
from .sde import SDE, NoiseType, apply_diffusion

__all__ = [
    "StepNoise",
    "NoNoise",
    "BrownianStepNoise",
    "PathNoise",
    "Driver",
    "BrownianDriver",
    "ODEDriver",
    "PathDriver",
    "ImpliedNoise",
]

Tensor = torch.Tensor


class StepNoise:
    """The noise of one step, as *one stage primitive* that every integrator is written against.

    * :meth:`prod` ``(g)`` -- the control product ``g ΔW`` of a diffusion value with this step's
      increment (torchsde's ``prod``, diffrax's ``vf_prod``); :meth:`g_dw` ``(t, y)`` evaluates ``g``
      at any stage ``(t, y)`` and multiplies. :meth:`prod_h` / :meth:`g_dh` do the same with the
      step's space-time Lévy area ``H`` (SRA-type methods).
    * :meth:`land` ``(y, f, dt, term)`` -- a stage that *lands*: ``y + f dt + term``. A pinned-path
      driver replaces it (the reference member lands on the path, the others move by the difference
      form), which is what keeps reconstruction exact for every integrator written this way.

    ``dw`` is the increment ``(K * B, *noise)`` where one exists (``None`` on a pinned path: there
    the stochastic part is implied, and methods such as Milstein skip their correction terms, whose
    contribution the landing replaces anyway).
    """

    dw: Tensor | None = None
    h: Tensor | None = None

    def prod(self, g: Tensor | float) -> Tensor | float:
        raise NotImplementedError

    def prod_h(self, g: Tensor | float) -> Tensor | float:
        raise ValueError("this noise has no space-time Lévy area (use a Brownian source that answers space_time_levy_area)")

    def g_dw(self, t: float, y: Tensor) -> Tensor | float:
        raise NotImplementedError

    def g_dh(self, t: float, y: Tensor) -> Tensor | float:
        raise NotImplementedError

    def land(self, y: Tensor, f: Tensor, dt: float, term: Tensor | float) -> Tensor:
        """``y + f dt + term`` (a new tensor)."""
        out = torch.add(y, f, alpha=dt)
        if isinstance(term, (int, float)):
            return out if term == 0 else out.add_(term)
        return out.add_(term)

    def advance(self, t: float, dt: float, y: Tensor, f: Tensor) -> Tensor:
        """Convenience for Euler-type stages: ``land(y, f, dt, g_dw(t, y))``."""
        return self.land(y, f, dt, self.g_dw(t, y))


class NoNoise(StepNoise):
    """g = 0 (ODEs)."""

    def prod(self, g: Tensor | float) -> float:
        return 0.0

    prod_h = prod

    def g_dw(self, t: float, y: Tensor) -> float:
        return 0.0

    g_dh = g_dw

    def land(self, y: Tensor, f: Tensor, dt: float, term: Tensor | float) -> Tensor:
        return torch.add(y, f, alpha=dt)


_NO_NOISE = NoNoise()


class BrownianStepNoise(StepNoise):
    """``g ΔW`` with ``ΔW = scale * xi``: the scale ``sqrt|dt|`` is folded into the product (for a
    scalar ``g`` it costs nothing), so grid sources never rescale their draws. ``h`` is the step's
    space-time Lévy area when the source gives it."""

    __slots__ = ("system", "xi", "scale", "n_event", "h", "_matrix", "_nt")

    def __init__(self, system: SDE, xi: Tensor | None, n_event: int, scale: float = 1.0) -> None:
        self.system, self.xi, self.scale, self.n_event = system, xi, scale, n_event
        self.h: Tensor | None = None
        self._nt = system.noise_type
        self._matrix = system.noise_type is NoiseType.ADDITIVE and bool(system.brownian_size)

    @property
    def dw(self) -> Tensor:  # type: ignore[override]
        return self.xi if self.scale == 1.0 else self.xi * self.scale

    def prod(self, g: Tensor | float) -> Tensor:
        if isinstance(g, (int, float)):
            return self.xi * (g * self.scale)
        nt = self._nt
        if (nt is NoiseType.DIAGONAL or nt is NoiseType.ADDITIVE) and not self._matrix:
            return torch.mul(g, self.xi) if self.scale == 1.0 else torch.mul(g, self.xi).mul_(self.scale)
        return apply_diffusion(nt, g, self.dw, self.n_event, self._matrix)

    def prod_h(self, g: Tensor | float) -> Tensor:
        if self.h is None:
            return super().prod_h(g)
        if isinstance(g, (int, float)):
            return self.h * g
        return apply_diffusion(self._nt, g, self.h, self.n_event, self._matrix)

    def g_dw(self, t: float, y: Tensor) -> Tensor:
        return self.prod(self.system.diffusion(t, y))

    def advance(self, t: float, dt: float, y: Tensor, f: Tensor) -> Tensor:
        """``land(y, f, dt, g_dw(t, y))`` fused for elementwise noise: no temporary for ``g ΔW``
        (the Euler–Maruyama hot path of every sampler)."""
        nt = self._nt
        if (nt is NoiseType.ADDITIVE or nt is NoiseType.DIAGONAL) and not self._matrix:
            g = self.system.diffusion(t, y)
            out = torch.add(y, f, alpha=dt)
            if isinstance(g, (int, float)):
                return out.add_(self.xi, alpha=g * self.scale)
            return out.addcmul_(g, self.xi, value=self.scale)
        return self.land(y, f, dt, self.g_dw(t, y))

    def g_dh(self, t: float, y: Tensor) -> Tensor:
        return self.prod_h(self.system.diffusion(t, y))


class Driver:
    """Prepares the per-step noise of a solve."""

    def prepare(self, system: SDE, y0: Tensor, grid: TimeGrid, coupling: Coupling) -> None:
        """Called once before the loop with the stacked ``(K, B, *event)`` initial state; ``system``
        takes flat ``(K * B, *event)`` states."""

    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        """The noise of step ``i``; ``y`` is the flat ``(K * B, *event)`` state."""
        raise NotImplementedError

    def interval_noise(self, t: float, dt: float, y: Tensor) -> StepNoise:
        """The noise over ``[t, t + dt]`` for any ``t, dt`` (adaptive steps); needs interval queries."""
        raise ValueError(f"{type(self).__name__} cannot answer arbitrary intervals (adaptive steps need a Brownian source)")


class ODEDriver(Driver):
    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        return _NO_NOISE

    def interval_noise(self, t: float, dt: float, y: Tensor) -> StepNoise:
        return _NO_NOISE


def _has_levy(source: object) -> bool:
    return callable(getattr(source, "space_time_levy_area", None))


class BrownianDriver(Driver):
    """Brownian increments from a source, turned into the members' increments by a coupling.

    ``source`` may be a :class:`~coupled_sde.brownian.BrownianSource` or a seed (an ``int`` or one
    per sample), in which case a :class:`~coupled_sde.brownian.GridBrownian` is built on the grid
    (for adaptive steps, an interval source). Integrators that need the space-time Lévy area
    (``info.needs_levy_area``) get it from ``source.space_time_levy_area(s, t) -> (dW, H)``.
    """

    def __init__(self, source: BrownianSource | int | list[int] | tuple[int, ...]) -> None:
        self.source = source

    def prepare(
        self, system: SDE, y0: Tensor, grid: TimeGrid, coupling: Coupling, *, levy: bool = False, intervals: bool = False
    ) -> None:
        K, B = y0.shape[0], y0.shape[1]
        event = tuple(y0.shape[2:])
        noise_shape = system.brownian_shape(event)
        n_streams = coupling.n_streams(K)
        src = self.source
        if not isinstance(src, BrownianSource):
            if intervals:  # any interval, in any order (adaptive steps): the package's own tree
                # (always with Lévy area, so one seed gives one path whatever the integrator)
                src = BrownianTree(
                    grid.t0, grid.t1, B, noise_shape, seed=src, streams=n_streams, levy_area=True, dtype=y0.dtype, device=y0.device
                )
            else:  # a fixed grid: counter-based increments (and Lévy areas) on it
                src = GridBrownian(grid, B, noise_shape, seed=src, streams=n_streams, dtype=y0.dtype, device=y0.device)
        want = (n_streams, B) + tuple(noise_shape)
        if tuple(src.shape) != want:
            raise ValueError(
                f"the Brownian source answers increments of shape {tuple(src.shape)} but this solve needs "
                f"{want} (streams={n_streams} for {type(coupling).__name__}, batch={B}, noise={tuple(noise_shape)})"
            )
        if levy and not _has_levy(src):
            raise ValueError(
                f"this integrator needs the space-time Lévy area, which {type(src).__name__} does not give "
                "(pass a seed, or a source with space_time_levy_area(s, t))"
            )
        self._src, self._levy = src, levy
        self._coupling = coupling
        self._noise = BrownianStepNoise(system, None, len(event))
        self._K, self._B = K, B
        self._device, self._dtype, self._n = y0.device, y0.dtype, grid.n_steps
        self._grid = grid
        if intervals:
            self._source, self._fetch, self._scales, self._views = None, 0, None, []
        elif levy:
            self._source, self._fetch, self._scales, self._start = None, 0, None, 0
            if callable(getattr(src, "levy_on_grid", None)):
                dw, h = src.levy_on_grid(grid)
                cast = {"device": y0.device, "dtype": y0.dtype}
                self._views = list(zip(self._per_step(dw.to(**cast)), self._per_step(h.to(**cast))))
            else:
                self._views = None
        elif isinstance(src, GridBrownian) and src.grid == grid:
            # Walk the grid chunk by chunk (aligned with the source's draws): no large table, and
            # the standard normals are used as they are, with sqrt|dt| folded into the update.
            self._source, self._fetch = src, src.chunk_steps()
            self._scales = [abs(dt) ** 0.5 for _, dt in grid.steps()]
            self._start, self._views = 0, []
        else:
            self._source, self._fetch, self._scales = None, grid.n_steps, None
            self._start, self._views = 0, self._per_step(src.on_grid(grid).to(device=y0.device, dtype=y0.dtype))

    def _per_step(self, raw: Tensor) -> list[Tensor]:
        """``(S, B, steps, *noise)`` -> one flat ``(K * B, *noise)`` view per step (raw streams
        ``(S, B, *noise)`` for state-dependent couplings, combined at each step)."""
        if self._coupling.state_dependent:
            return list(raw.unbind(2))
        members = self._coupling.combine(raw)  # (K, B, steps, *noise)
        steps = members.movedim(2, 0).reshape((raw.shape[2], self._K * self._B) + tuple(raw.shape[3:]))
        return list(steps.unbind(0))

    def _members(self, raw: Tensor, y: Tensor) -> Tensor:
        """One step's streams ``(S, B, *noise)`` -> the members' flat ``(K * B, *noise)``."""
        if self._coupling.state_dependent:
            return self._coupling.combine(raw, y.view((self._K, self._B) + tuple(y.shape[1:]))).flatten(0, 1)
        return self._coupling.combine(raw).flatten(0, 1)

    def _emit(self, dw: Tensor, scale: float, h: Tensor | None) -> StepNoise:
        noise = self._noise
        noise.xi, noise.scale, noise.h = dw, scale, h
        return noise

    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        if self._levy:
            if self._views is None:  # query the exact grid points (t + dt may be an ULP off)
                dw, h = self._src.space_time_levy_area(self._grid[i], self._grid[i + 1])
                cast = {"device": self._device, "dtype": self._dtype}
                return self._emit(self._members(dw.to(**cast), y), 1.0, self._members(h.to(**cast), y))
            dw, h = self._views[i]
            if self._coupling.state_dependent:
                dw, h = self._members(dw, y), self._members(h, y)
            return self._emit(dw, 1.0, h)
        k = i - self._start
        if k < 0 or k >= len(self._views):  # walking backwards too (reversible Heun's backward pass)
            start = i if k >= 0 else max(0, i - self._fetch + 1)
            self._start, k = start, i - start
            raw = self._source.normals(start, min(self._n, start + self._fetch))
            self._views = self._per_step(raw.to(device=self._device, dtype=self._dtype))
        dw = self._views[k]
        if self._coupling.state_dependent:
            dw = self._coupling.combine(dw, y.view((self._K, self._B) + tuple(y.shape[1:]))).flatten(0, 1)
        return self._emit(dw, 1.0 if self._scales is None else self._scales[i], None)

    def interval_noise(self, t: float, dt: float, y: Tensor) -> StepNoise:
        s1 = t + dt
        if self._levy:
            dw, h = self._src.space_time_levy_area(t, s1)
            h = self._members(h.to(device=self._device, dtype=self._dtype), y)
        else:
            dw, h = self._src.increment(t, s1), None
        return self._emit(self._members(dw.to(device=self._device, dtype=self._dtype), y), 1.0, h)


class PathNoise(StepNoise):
    """Member ``ref`` lands on the path; the others get the noise its step implies (difference form).

    ``prod``/``g_dw`` return 0 (nothing to evaluate: the landing supplies the stochastic part). When a
    recorder is attached (:func:`coupled_sde.reversal.backward_increments`), ``g_dw`` returns the
    diffusion itself, so that the term an integrator hands to :meth:`land` is ``ḡ`` (the weight
    ``ΔW`` would have), and the implied increment is the implied noise divided by it.
    """

    __slots__ = ("drv", "x_next", "extra", "t", "record")

    def __init__(self, drv: PathDriver, x_next: Tensor, extra: Tensor | None, record: list | None = None) -> None:
        self.drv, self.x_next, self.extra, self.record = drv, x_next, extra, record

    def prod(self, g: Tensor | float) -> Tensor | float:
        return g if self.record is not None else 0.0

    def prod_h(self, g: Tensor | float) -> float:
        return 0.0

    def g_dw(self, t: float, y: Tensor) -> Tensor | float:
        return self.drv._system.diffusion(t, y) if self.record is not None else 0.0

    def g_dh(self, t: float, y: Tensor) -> Tensor | float:
        return 0.0

    def land(self, y_flat: Tensor, f_flat: Tensor, dt: float, term: Tensor | float) -> Tensor:
        drv = self.drv
        r, x_next, coupling = drv.reference, self.x_next, drv.coupling
        y, f = y_flat.view(drv.stacked_shape), f_flat.view(drv.stacked_shape)
        if self.record is not None:
            implied = x_next - y[r] - dt * f[r]
            self.record.append((implied, term))
        if isinstance(coupling, Synchronous):
            # Difference form D' = D + (f_k - f_ref) dt, added to the path point: when a member equals
            # the reference and has the same drift it lands on the path *bit for bit*.
            out = (y - y[r]).add_(f - f[r], alpha=dt).add_(x_next)
        else:
            residual = x_next - y[r] - dt * f[r]  # g dW-bar in state units (additive noise)
            streams = [residual] if self.extra is None else [residual, *self.extra.unbind(0)]
            noise = coupling.combine(torch.stack(streams), y)
            out = torch.add(y, f, alpha=dt).add_(noise)
        out[r] = x_next
        return out.view(y_flat.shape)


class PathDriver(Driver):
    """Pin member ``reference`` to a given path; drive the others by the increments it implies.

    ``path`` has shape ``(n_steps + 1, B, *event)`` with ``path[i]`` the reference's state at grid
    point ``i`` (``path[0]`` must equal the reference member's initial state). Every stage that an
    integrator *lands* (:meth:`StepNoise.land`: Euler–Maruyama's step, both of Heun's stages, ...)
    puts the reference on the next path point, and the implied noise of that stage is whatever makes
    it land there under the reference's drift (the residual form of sync-SDE, see
    ``docs/concepts.md``); the other members add the same noise (synchronous coupling, difference
    form: exact reconstruction bit for bit when a member equals the reference) or, for ablations, a
    coupled version of it (state units; valid for additive noise), where the extra streams are fresh
    Brownian increments ``g dB`` seeded by ``extra_seed``.
    """

    def __init__(self, path: Tensor, reference: int = 0, extra_seed: int | list[int] = 0) -> None:
        self.path = path
        self.reference = int(reference)
        self.extra_seed = extra_seed
        self.record: list | None = None

    def prepare(self, system: SDE, y0: Tensor, grid: TimeGrid, coupling: Coupling) -> None:
        if self.path.shape[0] != grid.n_steps + 1 or tuple(self.path.shape[1:]) != tuple(y0.shape[1:]):
            raise ValueError(
                f"the pinned path has shape {tuple(self.path.shape)} but the grid has {grid.n_steps + 1} points and the "
                f"members' states are {tuple(y0.shape[1:])}"
            )
        if not 0 <= self.reference < y0.shape[0]:
            raise ValueError(f"reference member {self.reference} is not one of the {y0.shape[0]} members")
        if not torch.equal(self.path[0].to(y0), y0[self.reference]):
            raise ValueError("the pinned member's initial state must equal path[0]")
        self.coupling = coupling
        self.stacked_shape = tuple(y0.shape)
        self._system = system
        self._path = self.path.to(device=y0.device, dtype=y0.dtype)
        n_streams = coupling.n_streams(y0.shape[0])
        self._extra = None
        if not isinstance(coupling, Synchronous) and n_streams > 1:
            if system.noise_type is not NoiseType.ADDITIVE:
                raise ValueError("coupled ablations of a pinned path need additive noise (g independent of the state)")
            B = y0.shape[1]
            src = GridBrownian(
                grid, B, tuple(y0.shape[2:]), seed=self.extra_seed, streams=n_streams - 1, dtype=y0.dtype, device=y0.device
            )
            self._extra = src.on_grid(grid)  # (S-1, B, N, *event)

    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        extra = None
        if self._extra is not None:
            g = self._system.diffusion(t, y)
            extra = g * self._extra[:, :, i]
        rec = None
        if self.record is not None:
            rec = []
            self.record.append(rec)
        return PathNoise(self, self._path[i + 1], extra, rec)


class ImpliedNoise(Driver):
    """Replays the noise a pinned path implied, stage by stage (see :func:`coupled_sde.reversal.backward_increments`).

    ``terms[i][j]`` is the noise (state units) that stage ``j`` of step ``i`` added to land on the
    path; every member adds it (synchronous). ``increments`` ``(1, B, n_steps, *event)`` are the
    implied Brownian increments ``dW̄`` of each step's last stage (its noise divided by the weight
    ``ḡ`` that ``ΔW`` has in that stage); :meth:`brownian` gives them as a
    :class:`~coupled_sde.brownian.RecordedBrownian`.
    """

    def __init__(self, grid: TimeGrid, terms: list[list[Tensor]], increments: Tensor, integrator: str) -> None:
        self.grid, self.terms, self.increments, self.integrator = grid, terms, increments, integrator
        self.shape = (increments.shape[0], increments.shape[1]) + tuple(increments.shape[3:])

    def brownian(self):
        from .brownian import RecordedBrownian

        return RecordedBrownian(self.grid, self.increments)

    def on_grid(self, grid: TimeGrid) -> Tensor:
        return self.brownian().on_grid(grid)

    def prepare(self, system: SDE, y0: Tensor, grid: TimeGrid, coupling: Coupling) -> None:
        if grid != self.grid:
            raise ValueError("implied noise replays on the grid it was read on")
        if not isinstance(coupling, Synchronous):
            raise ValueError("implied noise is one stream: replay it with the synchronous coupling")
        self._K = y0.shape[0]

    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        return _ReplayNoise(self.terms[i], self._K)


class _ReplayNoise(StepNoise):
    """Stage ``j`` of the step adds ``terms[j]`` (broadcast over the members)."""

    __slots__ = ("terms", "j", "K")

    def __init__(self, terms: list[Tensor], K: int) -> None:
        self.terms, self.j, self.K = terms, 0, K

    def prod(self, g):
        return 0.0

    prod_h = prod

    def g_dw(self, t, y):
        return 0.0

    g_dh = g_dw

    def land(self, y: Tensor, f: Tensor, dt: float, term) -> Tensor:
        if self.j >= len(self.terms):
            raise ValueError("the integrator lands more stages per step than the one the implied noise was read with")
        n = self.terms[self.j]
        self.j += 1
        out = torch.add(y, f, alpha=dt)
        return out.view((self.K,) + tuple(n.shape)).add_(n).view(y.shape)
