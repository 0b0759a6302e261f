"""The closed-form backbone: exact predictions of Gaussian-mixture data under any noise schedule.

A :class:`~coupled_sde.problems.GaussianMixture` is a class-conditional model whose classes are its
components: ``Condition(prompt=j)`` conditions on component ``j``, ``Condition(prompt=None)`` is the
whole mixture (the "null prompt"), and ``guidance`` is a classifier-free guidance scale on the raw
prediction ``out_null + w (out_j - out_null)`` (``w = 1``, the default, is exact), where a
``negative_prompt`` replaces the null prompt. With the rectified-flow schedule it predicts the
velocity ``E[eps - x0 | x]`` (as FLUX); with a discrete VP schedule (Stable Diffusion's scaled-linear
betas, DDIM "leading" timesteps, by default) ``E[eps | x]`` (Ho et al. 2020) or
``v = alpha eps - sigma x0`` (Salimans & Ho 2022), as SD 1.x / 2.x. Editing methods run on it exactly
as on the real models, so their statistical properties (target marginals, closeness to the source,
exact reconstruction) can be checked against exact answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..problems import GaussianMixture
from ..schedules import DiscreteVP, RectifiedFlow, Schedule
from .base import Condition, Prediction

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
    """Exact predictions of a Gaussian mixture, conditioned per member.

    Args:
        mixture: the data distribution; its components are the classes.
        shift: static shift of the default rectified-flow schedule.
        schedule: any :class:`~coupled_sde.schedules.Schedule` (e.g. ``DiscreteVP.scaled_linear()``,
            Stable Diffusion's); ``"vp"`` is that one.
        prediction: what :meth:`predict` returns (default: ``"flow"`` on rectified flow, ``"epsilon"`` otherwise).
    """

    def __init__(
        self, mixture: GaussianMixture, shift: float = 1.0, *, schedule: Schedule | str | None = None,
        prediction: Prediction | None = None,
    ) -> None:  # fmt: skip
        self.mixture = mixture
        if schedule == "vp":
            schedule = DiscreteVP.scaled_linear()
        self.schedule: Schedule = schedule if isinstance(schedule, Schedule) else RectifiedFlow(shift)
        self.prediction: Prediction = prediction or ("flow" if isinstance(self.schedule, RectifiedFlow) else "epsilon")
        self.calls = 0

    @property
    def defaults(self) -> dict[str, dict[str, Any]]:
        """Stable Diffusion's grid for a discrete VP schedule (50 steps from index 10); the methods' own otherwise."""
        if self.schedule.continuous:
            return {}
        return {m: {"steps": 50, "start": 10} for m in ("sync-sde", "sdedit", "ode-inversion", "flowedit")}

    def encode_conditions(self, conditions: list[Condition]) -> list[MixtureMember]:
        return encode_mixture_conditions(self.mixture, conditions)

    def _raw(self, x: torch.Tensor, t: float, component: int | None) -> torch.Tensor:
        s, mix, kind = self.schedule, self.mixture, self.prediction
        if kind == "flow" and isinstance(s, RectifiedFlow):
            return mix.rf_velocity(x, t, component)
        if s.variance_preserving:
            abar = s.alpha_sq(t)
            eps = mix.vp_epsilon(x, abar, component)
            if kind == "v":  # v = sqrt(a) eps - sqrt(1 - a) x0 with x0 = (x - sqrt(1 - a) eps) / sqrt(a)
                return eps / math.sqrt(abar) - math.sqrt((1.0 - abar) / abar) * x
        else:
            r, diff, v = mix._posterior(x, s.alpha(t), s.sigma(t), component)
            eps = mix._mix(r, (s.sigma(t) / v) * diff)
        return s.convert(eps, x, t, "epsilon", kind)

    def predict(self, x: torch.Tensor, t: float, encoded: list[MixtureMember]) -> torch.Tensor:
        if x.shape[0] != len(encoded):
            raise ValueError(f"state has {x.shape[0]} members but {len(encoded)} conditions were encoded")
        self.calls += 1
        outs = []
        for k, m in enumerate(encoded):
            out = self._raw(x[k], t, m.component)
            if m.scale != 1.0:
                null = self._raw(x[k], t, m.negative)
                out = null + m.scale * (out - null)
            outs.append(out)
        return torch.stack(outs)
