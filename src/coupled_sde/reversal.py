"""Time reversal: reverse-time SDEs from a forward SDE and a score, and backward increments.

Anderson (1982): if ``dX = f(t, X) dt + g(t) dW`` forward in time with marginals ``p_t``, then the
same path solves, backward in time, ``dX = [f(t, X) - g g^T ∇log p_t(X)] dt + g dW̄`` where ``W̄`` is
a Brownian motion of the reversed filtration. :class:`ReverseSDE` is that system, written in the
forward time variable and integrated on a *decreasing* grid (signed ``dt < 0``; the increments the
solver draws are ``W̄``'s).

:func:`backward_increments` reads ``W̄``'s increments off a given forward path, in the residual form
of sync-SDE (``docs/concepts.md``): the noise that makes each of the integrator's landing stages
land exactly on the next path point, as the pinned-path driver defines it. Replayed through
:func:`~coupled_sde.solve`, they drive the reverse SDE back along the path.
The Anderson form ``dW̄ = dW + g ∇log p dt`` agrees only in the continuous limit and loses exact
reconstruction, which is why it is not used here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .grid import TimeGrid
from .integrators import Integrator, resolve_integrator
from .sde import SDE, Calculus, NoiseType

if TYPE_CHECKING:
    from .drivers import ImpliedNoise

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


def backward_increments(reverse: SDE, path: Tensor, grid: TimeGrid, integrator: Integrator | str | None = None) -> ImpliedNoise:
    """The noise that a path implies under ``reverse`` and ``integrator``: the pinned-path driver's.

    ``path`` has shape ``(n_steps + 1, B, *event)``, ``path[i]`` the state at ``grid[i]``; noise must
    be additive (``g`` independent of the state, nonzero on the steps). There is one mechanism for
    "the increment a path implies": this function runs :func:`~coupled_sde.solve` with a
    :class:`~coupled_sde.drivers.PathDriver` pinning one member to ``path`` and records what every
    landing stage implied (no stepping loop of its own, no iteration). Replayed through ``solve``
    (``noise=`` the returned :class:`~coupled_sde.drivers.ImpliedNoise`), it moves any member
    exactly as the pinned driver would have moved it, and reproduces ``path`` from ``path[0]``.

    What the increment means: for Euler–Maruyama, ``dW̄_i = (x_{i+1} − x_i − f(t_i, x_i) dt) / g(t_i)``,
    the increment under which the EM step lands on the path. For Heun both stages land on the path
    (the predictor at ``x_{i+1}``), so the corrector's noise is
    ``x_{i+1} − x_i − ½ (f(t_i, x_i) + f(t_{i+1}, x_{i+1})) dt``: the path satisfies the *trapezoidal
    rule* with drifts evaluated on the path, and ``dW̄_i`` is that noise divided by ``½ (g(t_i) + g(t_{i+1}))``
    (the weight ``ΔW`` has in Heun's corrector). ``ImpliedNoise.increments`` holds these ``dW̄`` (of
    each step's last stage); they become Brownian as the grid refines (``tests/test_reversal.py``).
    """
    from .drivers import ImpliedNoise, PathDriver
    from .solve import solve

    if reverse.noise_type is not NoiseType.ADDITIVE:
        raise ValueError("backward increments are defined here for additive noise (g independent of the state)")
    if path.shape[0] != grid.n_steps + 1:
        raise ValueError(f"the path has {path.shape[0]} points but the grid has {grid.n_steps + 1}")
    integ = resolve_integrator(integrator)
    driver = PathDriver(path)
    driver.record = []
    solve(reverse, path[:1], grid, integ, noise=driver, check_finite=False)
    terms, incs = [], []
    for i, stages in enumerate(driver.record):
        terms.append([n.reshape(path.shape[1:]) for n, _ in stages])
        n, weight = stages[-1]
        if (torch.as_tensor(weight) == 0).any():
            t = grid[i]
            raise ValueError(f"the diffusion vanishes at t={t:.6g} (step {i}): the increment is not defined there")
        incs.append((n / weight).reshape(path.shape[1:]))
    return ImpliedNoise(grid, terms, torch.stack(incs, dim=1).unsqueeze(0), integ.info.name)
