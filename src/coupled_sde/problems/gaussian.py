"""Gaussian and Gaussian-mixture data with exact scores and velocities at every noise level.

Two noising processes, both in the conventions diffusers users know:

* rectified flow: ``x_sigma = (1 - sigma) x0 + sigma eps`` and the velocity target ``u = E[eps - x0 | x]``
  (what FLUX/SD3 transformers predict);
* VP diffusion: ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`` and ``eps_hat = E[eps | x]`` (what an
  epsilon-prediction UNet predicts).

Component ``j`` is ``N(m_j, diag(s_j^2))``; its noised marginal is Gaussian with variance
``v_j = a^2 s_j^2 + b^2`` (``a, b`` the data and noise coefficients), so posterior means are linear:
``E[eps | x, j] = b / v_j (x - a m_j)`` and ``E[x0 | x, j] = m_j + a s_j^2 / v_j (x - a m_j)``. The
mixture's quantities weight components by their posterior responsibilities. Components double as
*classes*, so a mixture is also a class-conditional model whose null class is the whole mixture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["GaussianMixture", "GaussianData"]

Tensor = torch.Tensor


class GaussianMixture:
    """``sum_j w_j N(m_j, diag(s_j^2))`` over events of any shape.

    ``means``: ``(J, *event)``; ``stds``: scalar, ``(J,)`` or ``(J, *event)``; ``weights``: ``(J,)``
    (normalised here). Computations run in the dtype of ``means`` (use float64 for tests).
    """

    def __init__(
        self, means: Tensor | Sequence, stds: Tensor | Sequence | float = 1.0, weights: Tensor | Sequence | None = None
    ) -> None:
        self.means = torch.as_tensor(means, dtype=torch.get_default_dtype() if not isinstance(means, Tensor) else None)
        J = self.means.shape[0]
        ev = self.means.dim() - 1
        s = torch.as_tensor(stds, dtype=self.means.dtype)
        if s.dim() == 0:
            s = s.expand(J)
        if s.dim() == 1:
            s = s.reshape((J,) + (1,) * ev)
        self.stds = s.expand_as(self.means).clone()
        w = torch.ones(J, dtype=self.means.dtype) if weights is None else torch.as_tensor(weights, dtype=self.means.dtype)
        if w.shape != (J,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {J} non-negative numbers with a positive sum")
        self.weights = w / w.sum()

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    def component(self, j: int) -> GaussianMixture:
        """Component ``j`` alone (a class's conditional data distribution)."""
        return GaussianMixture(self.means[j : j + 1], self.stds[j : j + 1], None)

    # ----------------------------------------------------------------------------------- sampling
    def sample(self, n: int, generator: torch.Generator, component: int | None = None) -> tuple[Tensor, Tensor]:
        """``n`` samples and their component labels (``component`` fixes the label)."""
        if component is None:
            labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        else:
            labels = torch.full((n,), int(component), dtype=torch.long)
        z = torch.randn((n,) + self.event_shape, generator=generator, dtype=self.means.dtype)
        return self.means[labels] + self.stds[labels] * z, labels

    # ----------------------------------------------------------------------------------- internals
    def _posterior(self, x: Tensor, a: float, b: float, component: int | None) -> tuple[Tensor, Tensor, Tensor]:
        """Responsibilities ``(N, J)``, centred ``x - a m_j`` ``(N, J, *event)`` and ``v_j``."""
        m = self.means.to(x)
        v = (a * a) * self.stds.to(x) ** 2 + b * b  # (J, *event)
        diff = x.unsqueeze(1) - a * m.unsqueeze(0)
        if component is not None:
            r = torch.zeros(x.shape[0], self.n_components, dtype=x.dtype, device=x.device)
            r[:, component] = 1.0
            return r, diff, v
        red = tuple(range(2, diff.dim()))
        logp = -0.5 * ((diff * diff) / v + torch.log(v)).sum(red) + torch.log(self.weights.to(x))
        return torch.softmax(logp, dim=1), diff, v

    def _mix(self, r: Tensor, per_component: Tensor) -> Tensor:
        return (r.reshape(r.shape + (1,) * (per_component.dim() - 2)) * per_component).sum(1)

    # ----------------------------------------------------------------------------------- rectified flow
    def rf_velocity(self, x: Tensor, sigma: float, component: int | None = None) -> Tensor:
        """``E[eps - x0 | x_sigma = x]`` (the rectified-flow target), exact at every ``sigma`` in [0, 1]."""
        a, b = 1.0 - sigma, sigma
        r, diff, v = self._posterior(x, a, b, component)
        s2 = self.stds.to(x) ** 2
        u = ((b - a * s2) / v) * diff - self.means.to(x)
        return self._mix(r, u)

    def rf_score(self, x: Tensor, sigma: float, component: int | None = None) -> Tensor:
        """``∇log p_sigma(x)`` under the rectified-flow interpolant."""
        r, diff, v = self._posterior(x, 1.0 - sigma, sigma, component)
        return self._mix(r, -diff / v)

    # ----------------------------------------------------------------------------------- VP diffusion
    def vp_epsilon(self, x: Tensor, alpha_bar: float, component: int | None = None) -> Tensor:
        """``E[eps | x_t = x]`` for ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps``."""
        a, b = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        r, diff, v = self._posterior(x, a, b, component)
        return self._mix(r, (b / v) * diff)

    def vp_score(self, x: Tensor, alpha_bar: float, component: int | None = None) -> Tensor:
        r, diff, v = self._posterior(x, math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar), component)
        return self._mix(r, -diff / v)


class GaussianData(GaussianMixture):
    """One Gaussian ``N(mean, diag(std^2))``: the simplest closed-form data."""

    def __init__(self, mean: Tensor | Sequence | float, std: Tensor | Sequence | float = 1.0) -> None:
        m = torch.as_tensor(mean, dtype=torch.get_default_dtype() if not isinstance(mean, Tensor) else None)
        if m.dim() == 0:
            m = m.reshape(1)
        s = torch.as_tensor(std, dtype=m.dtype)
        super().__init__(m.unsqueeze(0), s.expand_as(m).unsqueeze(0))
