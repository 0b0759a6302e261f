"""``solve``: the one loop. K members x grid x integrator x driver (noise) x coupling.

Every sampler, every editing method and every study in this package is a configuration of this
loop; nothing else steps a system. Per step it asks the driver for the step's noise (Brownian
increments through a coupling, a pinned path, or none), lets the integrator evaluate the drift of
*all* members in one batched call per stage, and hands the drift part to the noise to finish the
update.

No hidden model calls: unlike ``torchsde.sdeint``, nothing evaluates the drift to "check shapes";
shapes are checked on the results of the first real call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .adaptive import PIController
from .brownian import BrownianSource
from .coupling import Coupling, resolve_coupling
from .drivers import BrownianDriver, Driver, ODEDriver, PathDriver
from .errors import NonFiniteError
from .grid import TimeGrid
from .integrators import Integrator, resolve_integrator
from .sde import SDE, CoupledSDE, NoiseType

__all__ = ["solve", "Solution", "PIController"]

Tensor = torch.Tensor
Callback = Callable[[int, float, Tensor], "Tensor | None"]


@dataclass
class Solution:
    """What :func:`solve` returns.

    ``y`` is the final state (``(B, *event)`` for a single process, ``(K, B, *event)`` for a coupled
    system); ``ys`` stacks the states saved at ``ts`` along a new first dimension (``None`` when
    nothing but the final state was asked for). On a fixed grid ``n_accepted = n_steps`` and
    ``n_rejected = 0``; under adaptive steps every member shares the accepted grid ``step_times``.
    """

    y: Tensor
    ts: list[float] = field(default_factory=list)
    ys: Tensor | None = None
    n_steps: int = 0
    n_drift_evals: int = 0
    #: Adaptive steps: accepted and rejected step counts and the accepted times (``t0 ... t1``).
    n_accepted: int = 0
    n_rejected: int = 0
    step_times: list[float] | None = None


class _Flat(SDE):
    """The system as the loop sees it: flat ``(K * B, *event)`` states (see :mod:`coupled_sde.drivers`).

    A plain SDE is called on the flat state directly (every member follows it: one call over the
    ``K * B`` batch, no reshaping); a :class:`CoupledSDE` gets the stacked ``(K, B, *event)`` view.
    Counts drift evaluations, checks the drift's shape on the first real call and its finiteness on
    every call.
    """

    def __init__(self, system: SDE, stacked_shape: tuple[int, ...], check_finite: bool) -> None:
        self.system = system
        self.noise_type, self.calculus, self.brownian_size = system.noise_type, system.calculus, system.brownian_size
        self.stacked_shape = stacked_shape
        self.coupled = isinstance(system, CoupledSDE)
        if self.coupled and system.n_members != stacked_shape[0]:
            raise ValueError(f"the system has {system.n_members} members but the initial state stacks {stacked_shape[0]}")
        self._f = self._coupled_drift if self.coupled else system.drift
        if not self.coupled or system.noise_type is NoiseType.ADDITIVE:
            # additive g depends on t only: it broadcasts against flat and stacked states alike
            self.diffusion = system.diffusion if not self.coupled else (lambda t, y: system.diffusion(t, y.view(stacked_shape)))
        self.check_finite = check_finite
        self.n_evals = 0
        self.step_index, self.step_time = 0, 0.0
        self._shapes_checked = False

    def _coupled_drift(self, t: float, y: Tensor) -> Tensor:
        return self.system.drift(t, y.view(self.stacked_shape)).reshape(y.shape)

    def diffusion(self, t: float, y: Tensor) -> Tensor | float:  # coupled, state-dependent g
        g = self.system.diffusion(t, y.view(self.stacked_shape))
        if isinstance(g, Tensor) and g.dim() >= 2 and tuple(g.shape[:2]) == self.stacked_shape[:2]:
            return g.flatten(0, 1)
        return g

    def drift(self, t: float, y: Tensor) -> Tensor:
        f = self._f(t, y)
        self.n_evals += 1
        if not self._shapes_checked:
            if not isinstance(f, Tensor) or f.shape != y.shape:
                got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise ValueError(f"the drift returned shape {got} for a state of shape {tuple(y.shape)}")
            self._shapes_checked = True
        # One reduction per call: NaN/Inf propagate into the sum. A huge finite sum that overflows
        # triggers the exact elementwise check, which then finds nothing.
        if self.check_finite and not math.isfinite(f.sum().item()):
            self._raise_non_finite(f, y)
        return f

    def check_state(self, y: Tensor, step: int, t: float) -> None:
        """The final state must be finite too: the last step's noise or diffusion is not seen by a drift."""
        if not math.isfinite(y.sum().item()):
            K, B = self.stacked_shape[:2]
            bad = ~torch.isfinite(y.reshape(K, B, -1)).all(-1)
            if not bad.any():
                return
            members = sorted({int(k) for k in torch.nonzero(bad)[:, 0]})
            samples = sorted({int(b) for b in torch.nonzero(bad)[:, 1]})
            raise NonFiniteError(
                f"step {step} (t={t:.6g}) produced a NaN/Inf state for member(s) {members}, sample(s) "
                f"{samples[:10]}{'...' if len(samples) > 10 else ''} (the drift was finite: the diffusion or noise made it)",
                step,
                t,
                members,
                samples,
                False,
            )

    def _raise_non_finite(self, f: Tensor, y: Tensor) -> None:
        K, B = self.stacked_shape[:2]
        bad = ~torch.isfinite(f.reshape(K, B, -1)).all(-1)  # (K, B)
        if not bad.any():
            return
        members = sorted({int(k) for k in torch.nonzero(bad)[:, 0]})
        samples = sorted({int(b) for b in torch.nonzero(bad)[:, 1]})
        state_ok = bool(torch.isfinite(y).all())
        where = (
            ""
            if state_ok
            else " (the state given to the drift was already non-finite: the previous step's noise or diffusion produced it)"
        )
        raise NonFiniteError(
            f"the drift returned NaN/Inf at step {self.step_index} (t={self.step_time:.6g}) for member(s) {members}, "
            f"sample(s) {samples[:10]}{'...' if len(samples) > 10 else ''}{where}",
            self.step_index,
            self.step_time,
            members,
            samples,
            state_ok,
        )


def _check_diffusion_shape(system: SDE, t: float, y: Tensor) -> None:
    """Validate the diffusion's shape once, before the loop (it is cheap: no model call)."""
    nt = system.noise_type
    if nt is None:
        return
    g = system.diffusion(t, y)
    if isinstance(g, (int, float)):  # a constant broadcasts to any state
        return
    if not isinstance(g, Tensor):
        raise TypeError(f"the diffusion must return a tensor or a float, got {type(g).__name__}")
    if nt is NoiseType.GENERAL:
        want = tuple(y.shape) + (system.brownian_size,)
        if tuple(g.shape) != want:
            raise ValueError(f"a general-noise diffusion must have shape {want} (state + (m,)), got {tuple(g.shape)}")
    elif nt is NoiseType.ADDITIVE and system.brownian_size:
        m = int(system.brownian_size)
        if g.dim() < 1 or g.shape[-1] != m:
            raise ValueError(f"an additive (d, m) diffusion must end in m={m} Brownian motions, got shape {tuple(g.shape)}")
        if _broadcast(tuple(g.shape[:-1]), tuple(y.shape)) != tuple(y.shape):
            raise ValueError(
                f"an additive (*event, m) diffusion of shape {tuple(g.shape)} does not fit the state {tuple(y.shape)}"
            )
    elif nt is NoiseType.DIAGONAL:
        if tuple(g.shape) != tuple(y.shape):
            raise ValueError(f"a diagonal diffusion must have the state's shape {tuple(y.shape)}, got {tuple(g.shape)}")
    else:
        if _broadcast(tuple(g.shape), tuple(y.shape)) is None:
            raise ValueError(
                f"an {nt.value} diffusion of shape {tuple(g.shape)} does not broadcast to the state {tuple(y.shape)}"
            )
        if _broadcast(tuple(g.shape), tuple(y.shape)) != tuple(y.shape):
            raise ValueError(f"an {nt.value} diffusion of shape {tuple(g.shape)} would change the state's shape {tuple(y.shape)}")


_HALF = (torch.float16, torch.bfloat16)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """The broadcast shape of ``a`` and ``b``, or None (plain Python: ``torch.broadcast_shapes`` on
    sizes imports ``torch._refs``, seconds on first use)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 0 not in (x, y) else 0)
    return tuple(out)


def _save_indices(grid: TimeGrid, save_at: Sequence[float] | str | None) -> list[int]:
    if save_at is None:
        return []
    if isinstance(save_at, str):
        if save_at != "all":
            raise ValueError(f"save_at must be 'all', None or a sequence of grid times, got {save_at!r}")
        return list(range(len(grid)))
    try:
        return sorted({grid.index(float(t)) for t in save_at})
    except KeyError as e:
        raise ValueError(f"save_at: {e.args[0]} (save times must be grid points)") from None


def solve(
    system: SDE,
    y0: Tensor,
    grid: TimeGrid | Sequence[float],
    integrator: Integrator | str | None = None,
    *,
    noise: BrownianSource | Driver | int | Sequence[int] | None = None,
    coupling: Coupling | str | float | None = None,
    save_at: Sequence[float] | str | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    check_finite: bool = True,
    adaptive: PIController | bool | None = None,
    adjoint: bool = False,
    adjoint_params: Sequence[Tensor] | None = None,
) -> Solution:
    """Integrate ``system`` from ``y0`` along ``grid``.

    Parameters
    ----------
    system:
        An :class:`~coupled_sde.sde.SDE` (or ODE). For coupled members, a
        :class:`~coupled_sde.sde.CoupledSDE` or a plain SDE that every member follows.
    y0:
        ``(B, *event)`` for one process; ``(K, B, *event)`` when ``coupling`` is given, ``system`` is a
        :class:`~coupled_sde.sde.CoupledSDE`, or ``noise`` is a :class:`~coupled_sde.drivers.PathDriver`.
        float32 or float64; a float16/bfloat16 state is integrated in float32 (half precision loses
        the small increments ``f dt`` against the state) and returned in its own dtype.
    grid:
        A :class:`~coupled_sde.grid.TimeGrid` (or a sequence of times), increasing or decreasing. Under
        ``adaptive`` only its end points and first step (the initial step size) are used.
    integrator:
        ``"euler"`` (default), ``"heun"``, ``"milstein"``, ``"sra1"``, ``"reversible_heun"`` or an
        :class:`Integrator`.
    noise:
        A seed (``int``, or one per sample), a Brownian source, or a driver. ODEs need none.
    coupling:
        How members share noise: ``"synchronous"`` (default), ``"independent"``, ``"reflection"``,
        a correlation ``rho`` or a :class:`~coupled_sde.coupling.Coupling`.
    save_at:
        ``"all"`` or grid times at which to keep the state (returned as ``Solution.ys``); under
        ``adaptive``, any times in the span, hit exactly.
    callback:
        ``callback(i, t_next, y)`` after every step; returning a tensor replaces the state.
    progress:
        Show a progress bar (tqdm).
    check_finite:
        Raise :class:`~coupled_sde.errors.NonFiniteError` naming the step and members as soon as a
        drift returns NaN/Inf (one reduction per drift call), or the final state is not finite.
    adaptive:
        A :class:`~coupled_sde.adaptive.PIController` (``True``: its defaults): adaptive steps from the
        integrator's embedded error estimate; rejected steps re-query the same Brownian path over the
        shorter interval (the noise must be a seed or a source with interval queries).
    adjoint:
        Gradients by the reversible Heun method's exact backward pass, O(1) memory in the number of
        steps (``integrator="reversible_heun"``; see :mod:`coupled_sde.adjoint`). ``adjoint_params``
        are the tensors to differentiate besides ``y0`` (default: ``system.parameters()`` when the
        system is a ``torch.nn.Module``).
    """
    if isinstance(grid, (list, tuple)) and any(isinstance(t, (list, tuple)) for t in grid):
        raise ValueError("grid must be a flat sequence of times (got a nested list)")
    if not isinstance(grid, TimeGrid):
        grid = TimeGrid(grid)
    if not isinstance(y0, Tensor) or not y0.is_floating_point():
        raise TypeError(
            f"y0 must be a floating-point tensor, got {type(y0).__name__ if not isinstance(y0, Tensor) else y0.dtype}"
        )
    out_dtype = y0.dtype
    if y0.dtype in _HALF:
        y0 = y0.float()
    integ = resolve_integrator(integrator)
    integ.check(system)
    if adaptive is True:
        adaptive = PIController()
    elif adaptive is False:
        adaptive = None
    if adaptive is not None and not integ.info.embedded:
        raise ValueError(f"{integ.info.name} has no embedded error estimate; adaptive steps need 'heun'")

    stacked = coupling is not None or isinstance(system, CoupledSDE) or isinstance(noise, PathDriver)
    if stacked and y0.dim() < 2:
        raise ValueError(f"a coupled solve needs y0 of shape (members, batch, *event), got {tuple(y0.shape)}")
    y = y0 if stacked else y0.unsqueeze(0)
    if y.dim() < 2:
        raise ValueError(f"y0 must have a batch dimension: (batch, *event), got {tuple(y0.shape)}")
    cpl = resolve_coupling(coupling)
    stacked_shape = tuple(y.shape)
    sys = _Flat(system, stacked_shape, check_finite)
    y = y.reshape((stacked_shape[0] * stacked_shape[1],) + stacked_shape[2:])  # flat (K * B, *event)

    if system.noise_type is None:
        if noise is not None and not isinstance(noise, Driver):
            raise ValueError("the system is an ODE: it takes no Brownian noise")
        driver = noise if isinstance(noise, Driver) else ODEDriver()
    elif noise is None:
        raise ValueError("an SDE needs noise: pass a seed (noise=0), a Brownian source or a driver")
    else:
        driver = noise if isinstance(noise, Driver) else BrownianDriver(noise)
        _check_diffusion_shape(sys, grid[0], y)
    if isinstance(driver, BrownianDriver):
        driver.prepare(sys, y.view(stacked_shape), grid, cpl, levy=integ.info.needs_levy_area, intervals=adaptive is not None)
    else:
        driver.prepare(sys, y.view(stacked_shape), grid, cpl)

    def public(state: Tensor) -> Tensor:  # what users see: (K, B, *event), or (B, *event) for one process
        out = state.view(stacked_shape) if stacked else state.view(stacked_shape[1:])
        return out if out.dtype == out_dtype else out.to(out_dtype)

    if adaptive is not None:
        from .adaptive import adaptive_loop

        if adjoint or callback is not None:
            raise ValueError("adaptive steps take no callback and no adjoint")
        y, ts, saved, acc, rej, times = adaptive_loop(adaptive, integ, sys, driver, grid, y, save_at)
        ys = torch.stack([public(s) for s in saved]) if saved else None
        if check_finite:
            sys.check_state(y, acc - 1, times[-1])
        return Solution(
            y=public(y), ts=ts, ys=ys, n_steps=acc, n_drift_evals=sys.n_evals, n_accepted=acc, n_rejected=rej, step_times=times
        )

    if adjoint:
        from .adjoint import reversible_adjoint

        if save_at is not None or callback is not None:
            raise ValueError("adjoint=True returns the final state only (no save_at, no callback)")
        y = reversible_adjoint(integ, sys, driver, grid, y, system, adjoint_params)
        if check_finite:
            sys.check_state(y, grid.n_steps - 1, grid[-2])
        return Solution(y=public(y), n_steps=grid.n_steps, n_drift_evals=sys.n_evals, n_accepted=grid.n_steps)

    save = _save_indices(grid, save_at)
    save_set = set(save)
    saved: list[Tensor] = [y] if 0 in save_set else []
    steps = grid.steps()
    iterator = range(len(steps))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"{integ.info.name} ({grid.n_steps} steps)", leave=False)
    stateful = getattr(integ, "stateful", False)
    if stateful:
        sys.step_index, sys.step_time = 0, grid[0]
        extra = integ.init_extra(sys, grid[0], y)
    step = integ.step
    for i in iterator:
        t, dt = steps[i]
        sys.step_index, sys.step_time = i, t
        if stateful:
            y, extra = integ.step_extra(sys, t, dt, y, extra, driver.step_noise(i, t, dt, y))
        else:
            y = step(sys, t, dt, y, driver.step_noise(i, t, dt, y))
        if callback is not None:
            replaced = callback(i, t + dt, public(y))
            if replaced is not None:
                if tuple(replaced.shape) != tuple(public(y).shape):
                    raise ValueError(
                        f"the callback returned shape {tuple(replaced.shape)} for a state of shape {tuple(public(y).shape)}"
                    )
                y = replaced.reshape(y.shape).to(y.dtype)
                if stateful:
                    extra = integ.init_extra(sys, t + dt, y)
        if i + 1 in save_set:
            saved.append(y)
    if check_finite:
        sys.check_state(y, grid.n_steps - 1, steps[-1][0])

    ys = torch.stack([public(s) for s in saved]) if saved else None
    n = grid.n_steps
    return Solution(y=public(y), ts=[grid[i] for i in save], ys=ys, n_steps=n, n_drift_evals=sys.n_evals, n_accepted=n)
