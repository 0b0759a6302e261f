"""Drivers: what moves the members at each step besides their drift.

An integrator computes drift evaluations and hands the *drift part* of its update to a
:class:`StepNoise`, which adds the stochastic part and returns the new state. Splitting the work this
way lets one loop (:func:`coupled_sde.solve`) run

* SDEs driven by Brownian increments through a coupling (:class:`BrownianDriver`),
* ODEs (:class:`NoNoise`, g = 0),
* and systems whose member 0 is *pinned* to a given path while the other members are driven by the
  increments that path implies (:class:`PathDriver`): the residual form of sync-SDE
  (``shared/spec/method.md`` §2), for any integrator, with exact reconstruction.

Layout: inside the loop the K members' states are stored *flat*, ``(K * B, *event)``, member-major
(a view of the stacked ``(K, B, *event)``), so that a plain SDE's drift is called on the state itself
with no reshaping; drivers that need the member structure take views.
"""

from __future__ import annotations

import torch

from .brownian import BrownianSource, GridBrownian
from .coupling import Coupling, Synchronous
from .grid import TimeGrid
from .sde import SDE, NoiseType, apply_diffusion

__all__ = ["StepNoise", "NoNoise", "BrownianStepNoise", "Driver", "BrownianDriver", "ODEDriver", "PathDriver"]

Tensor = torch.Tensor


class StepNoise:
    """The stochastic part of one step. ``f`` is a drift value, the update's drift part is ``f dt``."""

    #: The Brownian increments ``(K, B, *noise)`` of this step, where they exist (Milstein needs them).
    dw: Tensor | None = None

    def advance(self, t: float, dt: float, y: Tensor, f: Tensor) -> Tensor:
        """Euler-type update from ``y``: ``y + f dt + (noise evaluated at (t, y))``."""
        raise NotImplementedError

    def advance_trapezoidal(self, t: float, dt: float, y: Tensor, y_pred: Tensor, f: Tensor) -> Tensor:
        """Heun corrector from ``y`` with averaged drift ``f``; Stratonovich noise averages ``g`` at
        ``(t, y)`` and ``(t + dt, y_pred)``."""
        raise NotImplementedError


class NoNoise(StepNoise):
    def advance(self, t: float, dt: float, y: Tensor, f: Tensor) -> Tensor:
        return torch.add(y, f, alpha=dt)

    advance_trapezoidal = lambda self, t, dt, y, y_pred, f: torch.add(y, f, alpha=dt)  # noqa: E731


_NO_NOISE = NoNoise()


class BrownianStepNoise(StepNoise):
    """``g dW`` with ``dW = scale * xi``: the scale ``sqrt|dt|`` is folded into the update (for a
    scalar ``g`` it costs nothing), so grid sources never rescale their draws."""

    __slots__ = ("system", "xi", "scale", "n_event", "_term")

    def __init__(self, system: SDE, xi: Tensor | None, n_event: int, scale: float = 1.0) -> None:
        self.system, self.xi, self.scale, self.n_event = system, xi, scale, n_event
        self._term: Tensor | float | None = None

    @property
    def dw(self) -> Tensor:  # type: ignore[override]
        return self.xi if self.scale == 1.0 else self.xi * self.scale

    def _g_dw(self, t: float, y: Tensor) -> Tensor:
        g = self.system.diffusion(t, y)
        return apply_diffusion(self.system.noise_type, g, self.dw, self.n_event)

    def advance(self, t: float, dt: float, y: Tensor, f: Tensor) -> Tensor:
        sys = self.system
        if sys.noise_type is NoiseType.ADDITIVE or sys.noise_type is NoiseType.DIAGONAL:
            g = sys.diffusion(t, y)
            if isinstance(g, (int, float)):  # fused: no temporary for g dW
                self._term = g * self.scale
                return torch.add(y, f, alpha=dt).add_(self.xi, alpha=self._term)
            out = torch.add(y, f, alpha=dt)
            if sys.noise_type is NoiseType.ADDITIVE:
                self._term = g * self.dw
                return out.add_(self._term)
            return out.addcmul_(g, self.xi, value=self.scale)
        self._term = term = self._g_dw(t, y)
        return torch.add(y, f, alpha=dt).add_(term)

    def advance_trapezoidal(self, t: float, dt: float, y: Tensor, y_pred: Tensor, f: Tensor) -> Tensor:
        out = torch.add(y, f, alpha=dt)
        if self.system.noise_type is NoiseType.ADDITIVE:
            term = self._term
            if term is None:  # corrector without a predictor through this object
                g = self.system.diffusion(t, y)
                term = g * self.scale if isinstance(g, (int, float)) else g * self.dw
            if isinstance(term, (int, float)):
                return out.add_(self.xi, alpha=term)
            return out.add_(term)
        g_dw = self._g_dw(t, y)
        return out.add_(0.5 * (g_dw + self._g_dw(t + dt, y_pred)))


class Driver:
    """Prepares the per-step noise of a solve."""

    def prepare(self, system: SDE, y0: Tensor, grid: TimeGrid, coupling: Coupling) -> None:
        """Called once before the loop with the stacked ``(K, B, *event)`` initial state; ``system``
        takes flat ``(K * B, *event)`` states."""

    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        """The noise of step ``i``; ``y`` is the flat ``(K * B, *event)`` state."""
        raise NotImplementedError


class ODEDriver(Driver):
    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        return _NO_NOISE


class BrownianDriver(Driver):
    """Brownian increments from a source, turned into the members' increments by a coupling.

    ``source`` may be a :class:`~coupled_sde.brownian.BrownianSource` or a seed (an ``int`` or one
    per sample), in which case a :class:`~coupled_sde.brownian.GridBrownian` is built on the grid.
    """

    def __init__(self, source: BrownianSource | int | list[int] | tuple[int, ...]) -> None:
        self.source = source

    def prepare(self, system: SDE, y0: Tensor, grid: TimeGrid, coupling: Coupling) -> None:
        K, B = y0.shape[0], y0.shape[1]
        event = tuple(y0.shape[2:])
        noise_shape = system.brownian_shape(event)
        n_streams = coupling.n_streams(K)
        src = self.source
        if not isinstance(src, BrownianSource):
            src = GridBrownian(grid, B, noise_shape, seed=src, streams=n_streams, dtype=y0.dtype, device=y0.device)
        want = (n_streams, B) + tuple(noise_shape)
        if tuple(src.shape) != want:
            raise ValueError(
                f"the Brownian source answers increments of shape {tuple(src.shape)} but this solve needs "
                f"{want} (streams={n_streams} for {type(coupling).__name__}, batch={B}, noise={tuple(noise_shape)})"
            )
        self._coupling = coupling
        self._noise = BrownianStepNoise(system, None, len(event))
        self._K, self._B = K, B
        self._device, self._dtype, self._n = y0.device, y0.dtype, grid.n_steps
        if isinstance(src, GridBrownian) and src.grid == grid:
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

    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        k = i - self._start
        if k >= len(self._views):
            self._start, k = i, 0
            raw = self._source.normals(i, min(self._n, i + self._fetch))
            self._views = self._per_step(raw.to(device=self._device, dtype=self._dtype))
        dw = self._views[k]
        if self._coupling.state_dependent:
            dw = self._coupling.combine(dw, y.view((self._K, self._B) + tuple(y.shape[1:]))).flatten(0, 1)
        noise = self._noise
        noise.xi, noise._term = dw, None
        noise.scale = 1.0 if self._scales is None else self._scales[i]
        return noise


class _PathStepNoise(StepNoise):
    """Member ``ref`` lands on the path; the others get the increment its step implies."""

    __slots__ = ("drv", "x_next", "extra")

    def __init__(self, drv: PathDriver, x_next: Tensor, extra: Tensor | None) -> None:
        self.drv, self.x_next, self.extra = drv, x_next, extra

    def _update(self, y_flat: Tensor, f_flat: Tensor, dt: float) -> Tensor:
        drv = self.drv
        r, x_next, coupling = drv.reference, self.x_next, drv.coupling
        y, f = y_flat.view(drv.stacked_shape), f_flat.view(drv.stacked_shape)
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

    def advance(self, t: float, dt: float, y: Tensor, f: Tensor) -> Tensor:
        return self._update(y, f, dt)

    def advance_trapezoidal(self, t: float, dt: float, y: Tensor, y_pred: Tensor, f: Tensor) -> Tensor:
        return self._update(y, f, dt)


class PathDriver(Driver):
    """Pin member ``reference`` to a given path; drive the others by the increments it implies.

    ``path`` has shape ``(n_steps + 1, B, *event)`` with ``path[i]`` the reference's state at grid
    point ``i`` (``path[0]`` must equal the reference member's initial state). For whatever
    integrator the solve uses, the implied increment is *whatever makes that integrator's step land on
    the next path point* under the reference member's drift (the residual form of
    ``shared/spec/method.md`` §2); the other members add the same increment (synchronous coupling) or,
    for ablations, a coupled version of it (state units; valid for additive noise), where the extra
    streams are fresh Brownian increments ``g dB`` from ``extra_source``.
    """

    def __init__(self, path: Tensor, reference: int = 0, extra_seed: int | list[int] = 0) -> None:
        self.path = path
        self.reference = int(reference)
        self.extra_seed = extra_seed

    def prepare(self, system: SDE, y0: Tensor, grid: TimeGrid, coupling: Coupling) -> None:
        if self.path.shape[0] != grid.n_steps + 1 or tuple(self.path.shape[1:]) != tuple(y0.shape[1:]):
            raise ValueError(
                f"the pinned path has shape {tuple(self.path.shape)} but the grid has {grid.n_steps + 1} points and the "
                f"members' states are {tuple(y0.shape[1:])}"
            )
        if not torch.equal(self.path[0].to(y0), y0[self.reference]):
            raise ValueError("the pinned member's initial state must equal path[0]")
        self.coupling = coupling
        self.stacked_shape = tuple(y0.shape)
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
            self._system = system

    def step_noise(self, i: int, t: float, dt: float, y: Tensor) -> StepNoise:
        extra = None
        if self._extra is not None:
            g = self._system.diffusion(t, y)
            extra = g * self._extra[:, :, i]
        return _PathStepNoise(self, self._path[i + 1], extra)
