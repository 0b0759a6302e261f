"""Time reversal: reverse-time SDEs from a forward SDE and a score, and backward increments.

Anderson (1982): if ``dX = f(t, X) dt + g(t) dW`` forward in time with marginals ``p_t``, then the
same path solves, backward in time, ``dX = [f(t, X) - g g^T ∇log p_t(X)] dt + g dW̄`` where ``W̄`` is
a Brownian motion of the reversed filtration. :class:`ReverseSDE` is that system, written in the
forward time variable and integrated on a *decreasing* grid (signed ``dt < 0``; the increments the
solver draws are ``W̄``'s).

:func:`backward_increments` reads ``W̄``'s increments off a given forward path, in the residual form
of ``shared/spec/method.md`` §2: for each step, the increment that makes the chosen integrator land
exactly on the next path point. Replayed through :func:`~coupled_sde.solve` (a
:class:`~coupled_sde.brownian.RecordedBrownian`), they drive the reverse SDE back along the path.
The Anderson form ``dW̄ = dW + g ∇log p dt`` agrees only in the continuous limit and loses exact
reconstruction, which is why it is not used here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .brownian import RecordedBrownian
from .drivers import StepNoise
from .grid import TimeGrid
from .integrators import Integrator, resolve_integrator
from .sde import SDE, Calculus, NoiseType

__all__ = ["ReverseSDE", "backward_increments"]

Tensor = torch.Tensor


class ReverseSDE(SDE):
    """``dY = [f(t, Y) - g g^T score(t, Y)] dt + g dW̄``, to integrate on a decreasing grid.

    ``score(t, y)`` estimates ``∇log p_t(y)`` (exact for the closed-form problems, a network
    otherwise). Additive, diagonal and general noise are supported; the reverse is Itô.
    """

    def __init__(self, forward: SDE, score: Callable[[float, Tensor], Tensor]) -> None:
        if forward.noise_type is None:
            raise ValueError("an ODE has no reverse-time SDE (use the ODE itself backwards)")
        self.forward, self.score = forward, score
        self.noise_type, self.brownian_size = forward.noise_type, forward.brownian_size
        self.calculus = Calculus.ITO

    def drift(self, t: float, y: Tensor) -> Tensor:
        g = self.forward.diffusion(t, y)
        s = self.score(t, y)
        if self.noise_type is NoiseType.GENERAL:  # g g^T s with g of shape (B, *event, m)
            G = g.reshape(y.shape[0], -1, g.shape[-1])
            ggt_s = torch.einsum("bim,bjm,bj->bi", G, G, s.reshape(y.shape[0], -1))
            return self.forward.drift(t, y) - ggt_s.reshape(y.shape)
        return self.forward.drift(t, y) - (g * g) * s

    def diffusion(self, t: float, y: Tensor) -> Tensor | float:
        return self.forward.diffusion(t, y)


class _FixedNoise(StepNoise):
    """A given noise term in state units, added at every stage of the step."""

    def __init__(self, n: Tensor) -> None:
        self.n = n

    def advance(self, t: float, dt: float, y: Tensor, f: Tensor) -> Tensor:
        return torch.add(y, f, alpha=dt).add_(self.n)

    def advance_trapezoidal(self, t: float, dt: float, y: Tensor, y_pred: Tensor, f: Tensor) -> Tensor:
        return torch.add(y, f, alpha=dt).add_(self.n)


def backward_increments(
    reverse: SDE,
    path: Tensor,
    grid: TimeGrid,
    integrator: Integrator | str | None = None,
    *,
    tol: float | None = None,
    max_iter: int = 50,
) -> RecordedBrownian:
    """The Brownian increments ``dW̄`` implied by a path under ``reverse``, for ``integrator``.

    ``path`` has shape ``(n_steps + 1, B, *event)``, ``path[i]`` the state at ``grid[i]``. Noise must
    be additive (``g`` independent of the state, nonzero on the steps). For each step the noise term
    ``n = g dW̄`` solving ``step(X_i, n) = X_{i+1}`` is found by the fixed-point iteration
    ``n <- n + X_{i+1} - step(X_i, n)``, which is exact after one pass for Euler–Maruyama and
    contracts like ``L |dt|`` for multi-stage methods (Heun). Returns a
    :class:`~coupled_sde.brownian.RecordedBrownian` (one stream) to pass as ``noise=`` to
    :func:`~coupled_sde.solve`.
    """
    if reverse.noise_type is not NoiseType.ADDITIVE:
        raise ValueError("backward increments are defined here for additive noise (g independent of the state)")
    if path.shape[0] != grid.n_steps + 1:
        raise ValueError(f"the path has {path.shape[0]} points but the grid has {grid.n_steps + 1}")
    integ = resolve_integrator(integrator)
    integ.check(reverse)
    tol = tol if tol is not None else 64 * torch.finfo(path.dtype).eps
    system = reverse  # integrators step plain SDEs on (B, *event) states directly
    out = []
    for i, (t, dt) in enumerate(grid.steps()):
        x, x_next = path[i], path[i + 1]
        n = x_next - x - dt * system.drift(t, x)
        for _ in range(max_iter):
            resid = x_next - integ.step(system, t, dt, x, _FixedNoise(n))
            n = n + resid
            if resid.abs().max() <= tol * (1.0 + x_next.abs().max()):
                break
        else:
            raise RuntimeError(f"backward increments did not converge at step {i} (t={t:.6g}); use a finer grid")
        g = reverse.diffusion(t, x)
        if (torch.as_tensor(g) == 0).any():
            raise ValueError(f"the diffusion vanishes at t={t:.6g} (step {i}): the increment is not defined there")
        out.append(n / g)
    return RecordedBrownian(grid, torch.stack(out, dim=1).unsqueeze(0))
