"""Closed-form backbones: exact velocities of Gaussian-mixture data, for exact tests of editing.

A :class:`~coupled_sde.problems.GaussianMixture` is a class-conditional model whose classes are its
components: ``Condition(prompt=j)`` conditions on component ``j``, ``Condition(prompt=None)`` is the
whole mixture (the "null prompt"), and ``guidance`` is a classifier-free guidance scale
``u_null + w (u_j - u_null)`` (``w = 1``, the default, is the exact conditional velocity). Editing
methods run on it exactly as on FLUX, so their statistical properties (target marginals,
closeness to the source) can be checked against exact answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..grid import TimeGrid
from ..problems import GaussianMixture
from .base import Condition

__all__ = ["GaussianMixtureBackbone", "MixtureMember", "encode_mixture_conditions"]


@dataclass(frozen=True)
class MixtureMember:
    """One member's conditioning on a mixture: component (``None`` = the whole mixture), CFG scale,
    and the component replacing the unconditional model in CFG (``None`` = the whole mixture)."""

    component: int | None
    scale: float
    negative: int | None


def encode_mixture_conditions(mixture: GaussianMixture, conditions: list[Condition]) -> list[MixtureMember]:
    """Validate the members' classes against the mixture's components and encode them."""
    out = []
    for c in conditions:
        for p in (c.prompt, c.negative_prompt):
            if p is not None and not 0 <= int(p) < mixture.n_components:
                raise ValueError(f"class {p!r} is not a component of a {mixture.n_components}-component mixture")
        out.append(
            MixtureMember(
                None if c.prompt is None else int(c.prompt),
                1.0 if c.guidance is None else float(c.guidance),
                None if c.negative_prompt is None else int(c.negative_prompt),
            )
        )
    return out


class GaussianMixtureBackbone:
    """Exact rectified-flow velocities of a Gaussian mixture, conditioned per member."""

    prediction = "flow"

    def __init__(self, mixture: GaussianMixture, shift: float = 1.0) -> None:
        self.mixture = mixture
        self.shift = float(shift)
        self.calls = 0

    def sigmas(self, n_steps: int, latent_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        return TimeGrid.rectified_flow(n_steps, shift=self.shift).times

    def encode_conditions(self, conditions: list[Condition]) -> list[MixtureMember]:
        return encode_mixture_conditions(self.mixture, conditions)

    def predict(self, x: torch.Tensor, t: float, encoded: list[MixtureMember]) -> torch.Tensor:
        if x.shape[0] != len(encoded):
            raise ValueError(f"state has {x.shape[0]} members but {len(encoded)} conditions were encoded")
        self.calls += 1
        outs = []
        for k, m in enumerate(encoded):
            u = self.mixture.rf_velocity(x[k], t, m.component)
            if m.scale != 1.0:
                u0 = self.mixture.rf_velocity(x[k], t, m.negative)
                u = u0 + m.scale * (u - u0)
            outs.append(u)
        return torch.stack(outs)
