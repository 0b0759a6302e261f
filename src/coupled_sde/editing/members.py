"""A backbone seen as a coupled system: K members, one batched model call per drift evaluation.

For rectified-flow backbones (prediction ``"flow"``, ``u ≈ eps - x0``):

* reverse SDE (sampling/editing), in the forward variable on a decreasing grid:
  ``f = x / (1 - sigma) + 2 u``, ``g = sqrt(2 sigma / (1 - sigma))`` (``shared/spec/method.md`` §3);
* probability-flow ODE ``dx/dsigma = u`` (inversion forward, sampling backward).

An optional mask confines an edit to a region: every member's drift is blended with the reference
member's, ``f_k <- f_ref + m (f_k - f_ref)``, so outside the mask the members follow the reference
(the source) exactly and, under the synchronous pinned-path driver, stay *equal* to it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..noising import _check_sigma
from ..sde import Calculus, CoupledSDE, NoiseType

__all__ = ["FlowMembers"]

Tensor = torch.Tensor


class FlowMembers(CoupledSDE):
    """``K`` members of a flow backbone, each with its encoded conditioning.

    ``mode`` is ``"sde"`` (reverse-time SDE) or ``"ode"`` (probability flow). ``mask`` (broadcastable
    to one member's state ``(B, *latent)``, 1 = editable) blends drifts towards member ``reference``.
    """

    calculus = Calculus.ITO

    def __init__(
        self, backbone: Any, encoded: Any, n_members: int, mode: str = "sde", mask: Tensor | None = None, reference: int = 0
    ) -> None:
        if getattr(backbone, "prediction", None) != "flow":
            raise ValueError(
                f"FlowMembers needs a rectified-flow backbone (prediction 'flow'), got {getattr(backbone, 'prediction', None)!r}"
            )
        if mode not in ("sde", "ode"):
            raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")
        self.backbone, self.encoded, self.n_members = backbone, encoded, int(n_members)
        self.mode, self.mask, self.reference = mode, mask, reference
        self.noise_type = NoiseType.ADDITIVE if mode == "sde" else None
        self.model_calls = 0

    def velocity(self, t: float, y: Tensor) -> Tensor:
        """The backbone's prediction for all members: one batched call."""
        self.model_calls += 1
        u = self.backbone.predict(y, t, self.encoded)
        if u.shape != y.shape:
            raise ValueError(f"the backbone returned shape {tuple(u.shape)} for members of shape {tuple(y.shape)}")
        return u

    def drift(self, t: float, y: Tensor) -> Tensor:
        u = self.velocity(t, y)
        if self.mode == "sde":
            _check_sigma(t)
            f = torch.add(y, u, alpha=2.0 * (1.0 - t)).mul_(1.0 / (1.0 - t))  # x/(1-σ) + 2u
        else:
            f = u
        if self.mask is not None:
            r = self.reference
            f = f[r] + self.mask.to(f) * (f - f[r])
        return f

    def diffusion(self, t: float, y: Tensor) -> float:
        _check_sigma(t)
        return math.sqrt(2.0 * t / (1.0 - t))
