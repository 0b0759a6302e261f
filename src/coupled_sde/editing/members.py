"""A backbone seen as a coupled system: K conditioned members, one batched model call per evaluation.

One member system for every model family: what it needs of a backbone is its
:class:`~coupled_sde.schedules.Schedule`, its ``prediction`` kind and ``predict``. Its drift is the
reverse-time SDE with noise ``eta g`` that shares the model's marginals (``eta = 1`` the paper's
reverse SDE, Zhang & Scott §2; ``eta = 0`` the probability-flow ODE), for the continuous integrators
(Euler–Maruyama, Heun, ...). With the :class:`~coupled_sde.editing.ancestral.Ancestral` integrator
(DDIM/DDPM) it returns the noise prediction instead, and that integrator makes the exact discrete
step; this is the only way to step a discrete schedule (Stable Diffusion), and on rectified flow
with ``eta = 0`` it is Euler.

An optional mask confines an edit to a region: every member's output is blended with the
reference member's, ``f_k <- f_ref + m (f_k - f_ref)``, so outside the mask the members follow the
reference (the source) exactly and, under the synchronous pinned-path driver, stay *equal* to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..integrators import Integrator, resolve_integrator
from ..schedules import Schedule
from ..sde import Calculus, CoupledSDE, NoiseType
from .ancestral import Ancestral

__all__ = ["Members", "editing_integrator"]

Tensor = torch.Tensor


def editing_integrator(integrator: Integrator | str | None, schedule: Schedule, eta: float = 1.0) -> Integrator:
    """An integrator for members of a backbone with this schedule: a name (``"euler"``, ``"heun"``,
    ``"ddim"``/``"ddpm"``/``"ancestral"``) or an object; ``None`` is the schedule's default."""
    name = schedule.default_integrator if integrator is None else integrator
    if isinstance(name, str) and name.lower() in Ancestral.NAMES:
        return Ancestral(schedule, eta)
    integ = resolve_integrator(name)
    if not schedule.continuous and not isinstance(integ, Ancestral):
        raise ValueError(
            f"the {schedule!r} schedule is discrete (a model trained on integer timesteps has no continuous drift); "
            f"integrator {integrator!r} is not defined for it: use 'ddim' (the exact DDIM/DDPM step)"
        )
    return integ


class Members(CoupledSDE):
    """``K`` members of a backbone, each with its encoded conditioning (``backbone.encode_conditions``).

    Args:
        eta: noise scale of the reverse SDE (0: probability-flow ODE, a deterministic system).
        mask: broadcastable to one member's state ``(B, *latent)``, 1 = editable; blends towards
            member ``reference``.
        integrator: the integrator it will be solved with (from :func:`editing_integrator`); decides
            whether :meth:`drift` is the reverse drift or the noise prediction.

    ``model_calls`` counts batched ``backbone.predict`` calls. ``on_call``, when set, is told the grid
    time of each call before it is made (attention sharing keys its store by it,
    :mod:`coupled_sde.editing.value_sharing`).
    """

    calculus = Calculus.ITO

    def __init__(
        self,
        backbone: Any,
        encoded: Any,
        n_members: int,
        *,
        eta: float = 1.0,
        mask: Tensor | None = None,
        reference: int = 0,
        integrator: Integrator | None = None,
    ) -> None:
        self.backbone, self.encoded, self.n_members = backbone, encoded, int(n_members)
        self.schedule: Schedule = backbone.schedule
        self.kind = backbone.prediction
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta!r}")
        self.eta, self.mask, self.reference = float(eta), mask, int(reference)
        self.noise_type = NoiseType.ADDITIVE if self.eta > 0 else None
        self.epsilon_output = isinstance(integrator, Ancestral)
        if not self.epsilon_output and not self.schedule.continuous:
            editing_integrator(integrator, self.schedule, eta)  # raises the clear error
        self.model_calls = 0
        self.on_call: Callable[[float], None] | None = None

    def predict(self, t: float, y: Tensor) -> Tensor:
        """The backbone's (guided) prediction for all members at grid time ``t``: one batched call."""
        self.model_calls += 1
        if self.on_call is not None:
            self.on_call(t)
        out = self.backbone.predict(y, self.schedule.model_time(t), self.encoded)
        if out.shape != y.shape:
            raise ValueError(f"the backbone returned shape {tuple(out.shape)} for members of shape {tuple(y.shape)}")
        return out.to(y.dtype)

    def drift(self, t: float, y: Tensor) -> Tensor:
        out = self.predict(t, y)
        if self.epsilon_output:
            f = self.schedule.to_epsilon(out, y, t, self.kind)
        else:
            f = self.schedule.reverse_drift(y, out, self.kind, t, self.eta)
        if self.mask is not None:
            r = self.reference
            f = f[r] + self.mask.to(f) * (f - f[r])
        return f

    def diffusion(self, t: float, y: Tensor) -> float:
        return self.schedule.reverse_diffusion(t, self.eta)
