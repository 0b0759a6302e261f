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

__all__ = ["ConvergenceResult", "fit_order", "strong_convergence", "weak_convergence"]

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

    ``y0`` is ``(B, *event)``: ``B`` independent paths. ``reference`` gives the exact final state
    from the finest increments (e.g. :meth:`GeometricBrownianMotion.solution`); by default the same
    integrator on a grid ``reference_refine`` times finer than the finest level is the reference.
    """
    integ = resolve_integrator(integrator)
    grids, fine = _levels(coarse, levels, factor, reference_refine)
    noise_shape = system.brownian_shape(tuple(y0.shape[1:]))
    source = GridBrownian(fine, y0.shape[0], noise_shape, seed=seed, dtype=y0.dtype, device=y0.device)
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
