"""Strong and weak orders estimated from a sequence of step sizes on *shared* Brownian paths.

Every level is a refinement of the coarsest grid; one :class:`~coupled_sde.brownian.GridBrownian`
is built on the finest grid (the reference's), and every coarser grid's increments are sums of its
increments. Errors at different step sizes are therefore errors of the *same* paths, which is what
makes a strong-order fit meaningful (diffrax's tests do the same on dyadic grids).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..brownian import GridBrownian
from ..grid import TimeGrid
from ..integrators import Integrator, resolve_integrator
from ..sde import SDE
from ..solve import solve

__all__ = ["ConvergenceResult", "FinePathLevy", "fit_order", "strong_convergence", "weak_convergence"]

Tensor = torch.Tensor
#: ``reference(fine_grid, increments) -> final state``; increments ``(B, n_fine, *noise)``.
Reference = Callable[[TimeGrid, Tensor], Tensor]


@dataclass
class ConvergenceResult:
    """Errors against step sizes and the fitted order (slope of ``log error`` on ``log h``)."""

    kind: str
    integrator: str
    step_sizes: list[float]
    errors: list[float]
    order: float
    constant: float

    def table(self) -> str:
        rows = [f"{self.kind} convergence of {self.integrator}: order {self.order:.3f}"]
        rows += [f"  h = {h:.3e}   error = {e:.3e}" for h, e in zip(self.step_sizes, self.errors)]
        return "\n".join(rows)


def fit_order(step_sizes: list[float], errors: list[float]) -> tuple[float, float]:
    """Least-squares fit of ``error = C h^order`` on a log-log scale: ``(order, C)``."""
    if len(step_sizes) != len(errors) or len(errors) < 2:
        raise ValueError("need at least two (step size, error) pairs")
    if min(errors) <= 0:
        raise ValueError("errors must be positive to fit an order (is the reference identical to a level?)")
    lx = torch.tensor([math.log(h) for h in step_sizes], dtype=torch.float64)
    ly = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    A = torch.stack([lx, torch.ones_like(lx)], 1)
    sol = torch.linalg.lstsq(A, ly.unsqueeze(1)).solution.squeeze(1)
    return float(sol[0]), math.exp(float(sol[1]))


class FinePathLevy:
    """A Brownian source on a fine grid that also answers the space-time Lévy area of any sub-grid's
    steps, computed from the fine path (piecewise linear between the fine points).

    With ``w_k`` the path at the ``r`` fine points inside a coarse step of length ``h`` (relative to
    its start, ``w_r = ΔW``), ``H = (1/h) ∫ (W_u − W_s − (u − s)/h ΔW) du`` is, for the piecewise-linear
    path, ``(1/r)(Σ_{k<r} w_k + w_r/2) − w_r/2`` (the trapezoidal rule is exact on it). This is what
    order studies of SRA-type methods need on a path shared by all levels; the missing area inside the
    fine steps has variance ``h_fine/12`` per fine step, below the coarse levels' errors.
    """

    def __init__(self, fine: GridBrownian) -> None:
        self.fine, self.grid, self.shape = fine, fine.grid, fine.shape

    def increment(self, s: float, t: float) -> Tensor:
        return self.fine.increment(s, t)

    def on_grid(self, grid: TimeGrid) -> Tensor:
        return self.fine.on_grid(grid)

    def levy_on_grid(self, grid: TimeGrid) -> tuple[Tensor, Tensor]:
        """``(ΔW, H)``, each ``(S, B, n_steps, *noise)``, for a uniform sub-grid of the fine grid."""
        table = self.fine.on_grid(self.grid)
        if self.grid.n_steps % grid.n_steps or not grid.is_subgrid_of(self.grid):
            raise ValueError(f"{grid!r} is not a uniform coarsening of the fine path's {self.grid!r}")
        r = self.grid.n_steps // grid.n_steps
        w = table.reshape(table.shape[:2] + (grid.n_steps, r) + table.shape[3:]).cumsum(3)
        dw = w[:, :, :, -1]
        inner = w[:, :, :, :-1].sum(3)
        return dw, (inner + 0.5 * dw) / r - 0.5 * dw

    def space_time_levy_area(self, s: float, t: float) -> tuple[Tensor, Tensor]:
        i, j = self.grid.index(s), self.grid.index(t)
        w = self.fine.on_grid(self.grid)[:, :, i:j].cumsum(2)
        r = j - i
        dw = w[:, :, -1]
        return dw, (w[:, :, :-1].sum(2) + 0.5 * dw) / r - 0.5 * dw


def _levels(coarse: TimeGrid, levels: int, factor: int, reference_refine: int) -> tuple[list[TimeGrid], TimeGrid]:
    grids = [coarse.refine(factor**k) for k in range(levels)]
    return grids, grids[-1].refine(reference_refine)


def strong_convergence(
    system: SDE,
    y0: Tensor,
    coarse: TimeGrid,
    integrator: Integrator | str | None = None,
    *,
    levels: int = 5,
    factor: int = 2,
    reference: Reference | None = None,
    reference_refine: int = 16,
    seed: int = 0,
) -> ConvergenceResult:
    """Strong error ``E|X_h(T) - X(T)|`` at ``levels`` step sizes ``h, h/factor, ...``.

    ``y0`` is ``(B, *event)``: ``B`` independent paths. Methods that need the space-time Lévy area
    (SRA1) get it from the source for self-convergence (each fine step's own area, composed exactly onto
    the coarse steps), and from the piecewise-linear fine path (:class:`FinePathLevy`) when ``reference``
    is given: a reference computed from the increments alone solves that path, so the coarse levels
    must see its areas. ``reference`` gives the exact final state
    from the finest increments (e.g. :meth:`GeometricBrownianMotion.solution`); by default the same
    integrator on a grid ``reference_refine`` times finer than the finest level is the reference.
    """
    integ = resolve_integrator(integrator)
    grids, fine = _levels(coarse, levels, factor, reference_refine)
    noise_shape = system.brownian_shape(tuple(y0.shape[1:]))
    source = GridBrownian(fine, y0.shape[0], noise_shape, seed=seed, dtype=y0.dtype, device=y0.device)
    if integ.info.needs_levy_area and (reference is not None or not callable(getattr(source, "levy_on_grid", None))):
        # a reference computed from the increments alone is the solution of the piecewise-linear
        # path, whose Lévy areas are those of FinePathLevy; self-convergence uses the source's own
        source = FinePathLevy(source)
    if reference is None:
        ref = solve(system, y0, fine, integ, noise=source).y
    else:
        ref = reference(fine, source.on_grid(fine)[0])
    errors, hs = [], []
    for g in grids:
        y = solve(system, y0, g, integ, noise=source).y
        errors.append(float((y - ref).reshape(y.shape[0], -1).norm(dim=1).mean()))
        hs.append(abs(g.t1 - g.t0) / g.n_steps)
    order, c = fit_order(hs, errors)
    return ConvergenceResult("strong", integ.info.name, hs, errors, order, c)


def weak_convergence(
    system: SDE,
    y0: Tensor,
    coarse: TimeGrid,
    functional: Callable[[Tensor], Tensor],
    exact: float,
    integrator: Integrator | str | None = None,
    *,
    levels: int = 5,
    factor: int = 2,
    seed: int = 0,
) -> ConvergenceResult:
    """Weak error ``|E phi(X_h(T)) - exact|`` with ``phi = functional`` (per-sample values ``(B,)``).

    Levels share paths, so their Monte Carlo errors are correlated and the bias dominates the
    differences; ``B`` must still be large enough that the sampling error is below the finest bias.
    """
    integ = resolve_integrator(integrator)
    grids, _ = _levels(coarse, levels, factor, 1)
    noise_shape = system.brownian_shape(tuple(y0.shape[1:]))
    source = GridBrownian(grids[-1], y0.shape[0], noise_shape, seed=seed, dtype=y0.dtype, device=y0.device)
    errors, hs = [], []
    for g in grids:
        y = solve(system, y0, g, integ, noise=source).y
        errors.append(abs(float(functional(y).mean()) - exact))
        hs.append(abs(g.t1 - g.t0) / g.n_steps)
    order, c = fit_order(hs, errors)
    return ConvergenceResult("weak", integ.info.name, hs, errors, order, c)
