"""Ornstein–Uhlenbeck and geometric Brownian motion, with exact solutions given the Brownian path."""

from __future__ import annotations

import math

import torch

from ..grid import TimeGrid
from ..sde import Calculus, LinearSDE

__all__ = ["OrnsteinUhlenbeck", "GeometricBrownianMotion"]

Tensor = torch.Tensor


class OrnsteinUhlenbeck(LinearSDE):
    """``dX = theta (mu - X) dt + sigma dW`` (additive noise; Itô = Stratonovich).

    Two members driven by the same Brownian motion (synchronous coupling) contract exactly:
    ``X_t - Y_t = e^{-theta t} (X_0 - Y_0)``.
    """

    def __init__(self, theta: float = 1.0, mu: float = 0.0, sigma: float = 1.0) -> None:
        super().__init__(a=-theta, b=theta * mu, c=0.0, d=sigma)
        self.theta, self.mu, self.sigma = float(theta), float(mu), float(sigma)

    def mean(self, t: float, x0: Tensor) -> Tensor:
        return self.mu + (x0 - self.mu) * math.exp(-self.theta * t)

    def variance(self, t: float) -> float:
        return self.sigma**2 * (1.0 - math.exp(-2.0 * self.theta * t)) / (2.0 * self.theta)

    def solution(self, x0: Tensor, grid: TimeGrid, increments: Tensor) -> Tensor:
        """The exact solution at every grid point driven by the piecewise-linear interpolation of
        the Brownian path through the given increments ``(B, n_steps, *event)``.

        On each step the noise is the constant slope ``dW / dt`` and the linear ODE is solved exactly;
        for additive noise this is the Itô solution of the interpolated path (Wong–Zakai), which
        converges to the true strong solution at order 1 in the step. Use a fine grid (a refinement
        of the grids under test) for references.
        """
        x = x0
        out = [x]
        for i, (_, dt) in enumerate(grid.steps()):
            e = math.exp(-self.theta * dt)
            slope = self.sigma * increments[:, i] / dt
            target = self.mu + slope / self.theta
            x = target + (x - target) * e
            out.append(x)
        return torch.stack(out)


class GeometricBrownianMotion(LinearSDE):
    """``dX = mu X dt + sigma X dW`` (diagonal, multiplicative noise), Itô or Stratonovich.

    Exact: ``X_t = X_0 exp((mu - sigma^2/2) t + sigma W_t)`` (Itô) or ``X_0 exp(mu t + sigma W_t)``
    (Stratonovich) -- a function of ``W_t`` alone, so strong errors on a shared path are exact.
    """

    def __init__(self, mu: float = 1.0, sigma: float = 1.0, calculus: Calculus | str = "ito") -> None:
        super().__init__(a=mu, b=0.0, c=sigma, d=0.0, calculus=calculus)
        self.mu, self.sigma = float(mu), float(sigma)

    def solution(self, x0: Tensor, grid: TimeGrid, increments: Tensor) -> Tensor:
        """Exact solution at every grid point, given the increments ``(B, n_steps, *event)``."""
        w = torch.cat([torch.zeros_like(increments[:, :1]), increments.cumsum(1)], 1)
        t = (grid.times - grid.t0).to(increments.dtype).reshape((1, -1) + (1,) * (increments.dim() - 2))
        drift = self.mu - (0.5 * self.sigma**2 if self.calculus is Calculus.ITO else 0.0)
        return (x0.unsqueeze(1) * torch.exp(drift * t + self.sigma * w)).transpose(0, 1)

    def mean(self, t: float, x0: Tensor) -> Tensor:
        """``E[X_t] = X_0 e^{mu t}`` (Itô)."""
        return x0 * math.exp(self.mu * t)
