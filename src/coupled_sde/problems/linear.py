"""Ornstein–Uhlenbeck and geometric Brownian motion, with exact solutions given the Brownian path."""

from __future__ import annotations

import math

import torch

from ..grid import TimeGrid
from ..sde import SDE, Calculus, LinearSDE, NoiseType

__all__ = ["OrnsteinUhlenbeck", "GeometricBrownianMotion", "TimeDependentOU", "CommutativeLinear"]

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


class TimeDependentOU(SDE):
    """``dX = −θ X dt + (σ₀ + σ₁ t) M dW``: additive noise whose diffusion depends on time.

    ``M`` is ``None`` (elementwise noise, ``g = σ₀ + σ₁ t``) or a ``(d, m)`` matrix (state-independent
    matrix diffusion: declared *additive* with ``brownian_size = m``). Every diffusion model's reverse
    SDE has noise of this type; Heun must average ``g(t)`` and ``g(t + dt)`` on it.
    """

    calculus = Calculus.ITO

    def __init__(self, theta: float = 1.0, sigma0: float = 0.5, sigma1: float = 1.0, matrix: Tensor | None = None) -> None:
        self.theta, self.sigma0, self.sigma1 = float(theta), float(sigma0), float(sigma1)
        self.matrix = matrix
        self.noise_type = NoiseType.ADDITIVE
        self.brownian_size = None if matrix is None else int(matrix.shape[-1])

    def drift(self, t: float, y: Tensor) -> Tensor:
        return y * (-self.theta)

    def diffusion(self, t: float, y: Tensor) -> Tensor | float:
        c = self.sigma0 + self.sigma1 * t
        return c if self.matrix is None else c * self.matrix.to(y)

    def solution(self, x0: Tensor, grid: TimeGrid, increments: Tensor) -> Tensor:
        """Exact solution at every grid point for the piecewise-linear path through ``increments``
        ``(B, n_steps, *noise)``: on each step ``dX/dt = −θX + g(t) ΔW/h`` is solved in closed form,
        ``∫_a^b e^{−θ(b−u)} (σ₀ + σ₁ u) du = F(b) − F(a)``, ``F(u) = e^{−θ(b−u)} ((σ₀ + σ₁ u)/θ − σ₁/θ²)``."""
        th, s0, s1 = self.theta, self.sigma0, self.sigma1
        x, out = x0, [x0]
        for i, (a, dt) in enumerate(grid.steps()):
            b = a + dt

            def F(u: float, b: float = b) -> float:
                return math.exp(-th * (b - u)) * ((s0 + s1 * u) / th - s1 / th**2)

            dw = increments[:, i]
            if self.matrix is not None:
                dw = dw @ self.matrix.to(dw).T
            x = x * math.exp(-th * dt) + (F(b) - F(a)) / dt * dw
            out.append(x)
        return torch.stack(out)


class CommutativeLinear(SDE):
    """``dX_i = μ X_i dt + Σ_j b_ij X_i dW_j`` with ``m`` Brownian motions: *general* noise (or
    *scalar* for ``m = 1`` with ``scalar=True``) whose exact solution is a function of ``W_T``:
    ``X_i(T) = X_i(0) exp((μ − c Σ_j b_ij²) T + Σ_j b_ij W_j(T))``, ``c = ½`` (Itô) or 0 (Stratonovich).
    States ``(B, d)``; ``b`` is ``(d, m)``."""

    def __init__(self, mu: float, b: Tensor, calculus: Calculus | str = "ito", scalar: bool = False) -> None:
        self.mu, self.b = float(mu), b
        self.calculus = Calculus(calculus)
        if scalar:
            if b.shape[1] != 1:
                raise ValueError("scalar noise has one Brownian motion: b must be (d, 1)")
            self.noise_type, self.brownian_size = NoiseType.SCALAR, None
        else:
            self.noise_type, self.brownian_size = NoiseType.GENERAL, int(b.shape[1])

    def drift(self, t: float, y: Tensor) -> Tensor:
        return self.mu * y

    def diffusion(self, t: float, y: Tensor) -> Tensor:
        b = self.b.to(y)
        if self.noise_type is NoiseType.SCALAR:
            return y * b[:, 0]
        return y.unsqueeze(-1) * b

    def solution(self, x0: Tensor, grid: TimeGrid, increments: Tensor) -> Tensor:
        """Exact final state from the increments ``(B, n_steps, m)`` (or ``(B, n_steps)`` for scalar noise)."""
        w = increments.sum(1)
        if w.dim() == 1:
            w = w.unsqueeze(-1)
        b = self.b.to(x0)
        c = 0.5 if self.calculus is Calculus.ITO else 0.0
        T = grid.t1 - grid.t0
        return x0 * torch.exp((self.mu - c * (b * b).sum(1)) * T + w @ b.T)
