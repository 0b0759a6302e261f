"""A VP diffusion backbone (Stable Diffusion 1.x/2.x) seen as a coupled system on its timestep grid.

The time variable is the backbone's integer training timestep, as a float. A grid is
``t_0 > t_1 > ... > t_{M-1} > t_M = -1``: the backbone's ``timesteps(n)`` (e.g. ``981, 961, ..., 1``)
from a start index, followed by the *data point* ``-1`` (:data:`DATA_TIMESTEP`), whose
``alpha_bar`` is the backbone's ``final_alpha_cumprod`` -- DDIM's value "after the last timestep"
(1.0 with ``set_alpha_to_one``; ``alphas_cumprod[0]`` for SD, whose pipeline output is that
state). Source latents are taken to live at the data point, so sampling and noising use one and the
same convention as diffusers' ``DDIMScheduler`` / ``DDIMInverseScheduler``.

:class:`VPMembers` defines a drift ``f`` and an additive diffusion ``g`` such that **one
Euler–Maruyama step** from ``t_i`` to ``t_{i+1}`` (``dt = t_{i+1} - t_i < 0``, ``dW ~ N(0, |dt|)``)
*is* the strided DDPM ancestral step (Ho et al. 2020; DDIM with ``eta = 1``, Song et al. 2021)::

    x_{t_{i+1}} = mu(x_{t_i}, c) + sigma_i z,        z ~ N(0, I),
    mu = sqrt(a') x0_hat + sqrt(1 - a' - sigma_i^2) eps_hat,   x0_hat = (x - sqrt(1 - a) eps_hat) / sqrt(a),
    sigma_i^2 = eta^2 (1 - a') / (1 - a) (1 - a / a'),

(``a = alpha_bar(t_i)``, ``a' = alpha_bar(t_{i+1})``; with ``eta = 1`` ``mu`` and ``sigma_i^2`` are
the mean and variance of the DDPM posterior ``q(x_{t_{i+1}} | x_{t_i}, x0_hat)``), namely
``f = (mu - x) / dt`` and ``g = sigma_i / sqrt(|dt|)``. As the steps shrink, ``f`` tends to minus the
VP reverse drift ``b = 1/2 beta x - beta eps_hat / sqrt(1 - abar)`` and ``g^2`` to ``beta`` (per
training step), i.e. this is the reverse-time VP-SDE of ``shared/spec/method.md`` §4 with the DDPM
chain as its discretisation. Consequently, under :func:`coupled_sde.solve` with a
:class:`~coupled_sde.drivers.PathDriver` (synchronous coupling) the target member follows
``y_{t_{i+1}} = mu(y, c_tgt) + n_i`` with ``n_i = x^src_{t_{i+1}} - mu(x^src_{t_i}, c_src)``: the
discrete sync-SDE of method.md §4.

``mode="ode"`` is the deterministic DDIM step (``eta = 0``), on decreasing grids (sampling) and on
increasing ones (DDIM inversion). The model is always evaluated at the step's *noisier* timestep:
``t_i`` when sampling, ``t_{i+1}`` when inverting (as diffusers' ``DDIMInverseScheduler``), so the
data point ``-1`` is never passed to the network. The step's coefficients come from the grid the
system was built on, so these systems must be solved with the Euler–Maruyama integrator on that
grid (or a contiguous part of it); a two-stage method (Heun) would not be the DDPM/DDIM step.

Predictions: ``"epsilon"`` directly, ``"v"`` through ``eps = sqrt(abar_s) v + sqrt(1 - abar_s) x`` at
the model's timestep ``s``. CFG is the backbone's (on the raw prediction, as diffusers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..brownian import GridBrownian
from ..grid import TimeGrid
from ..sde import Calculus, CoupledSDE, NoiseType
from .common import Seeds

__all__ = ["DATA_TIMESTEP", "VPMembers", "vp_alpha_bar", "vp_grid", "vp_forward_path", "check_vp_backbone"]

Tensor = torch.Tensor

#: The grid's last point: "after the last timestep", where the source latent lives.
DATA_TIMESTEP = -1


def check_vp_backbone(backbone: Any) -> None:
    """Raise a clear error unless ``backbone`` is a VP diffusion backbone (``prediction`` epsilon or v)."""
    prediction = getattr(backbone, "prediction", None)
    if prediction not in ("epsilon", "v"):
        raise ValueError(
            f"this method needs a VP diffusion backbone (prediction 'epsilon' or 'v', e.g. Stable Diffusion), "
            f"got prediction {prediction!r}"
        )
    for name in ("alphas_cumprod", "final_alpha_cumprod", "timesteps"):
        if not hasattr(backbone, name):
            raise TypeError(f"{type(backbone).__name__} has prediction {prediction!r} but no {name!r}")


def vp_alpha_bar(backbone: Any, t: float) -> float:
    """``alpha_bar`` at a grid time: ``alphas_cumprod[t]`` for a training timestep, ``final_alpha_cumprod``
    at :data:`DATA_TIMESTEP`."""
    if t == DATA_TIMESTEP:
        return float(backbone.final_alpha_cumprod)
    n = int(backbone.alphas_cumprod.shape[0])
    if int(t) != t or not 0 <= int(t) < n:
        raise ValueError(f"grid time {t!r} is neither a training timestep in [0, {n - 1}] nor the data point {DATA_TIMESTEP}")
    return float(backbone.alphas_cumprod[int(t)])


def vp_grid(backbone: Any, n_steps: int, start: int = 0) -> TimeGrid:
    """The sampling grid ``timesteps(n_steps)[start:]`` followed by the data point ``-1``.

    ``n_steps - start`` steps, one model evaluation each. ``start`` is the index of the first
    timestep (SDEdit's strength is ``1 - start / n_steps``).
    """
    check_vp_backbone(backbone)
    if isinstance(start, bool) or int(start) != start:
        raise ValueError(f"start must be an integer step index, got {start!r}")
    start = int(start)
    if not 0 <= start < n_steps:
        raise ValueError(f"start={start} is outside the schedule's steps 0..{n_steps - 1}")
    ts = [int(t) for t in backbone.timesteps(n_steps)]
    if len(ts) != n_steps or any(b >= a for a, b in zip(ts[:-1], ts[1:])) or ts[-1] < 0:
        raise ValueError(f"the backbone's timesteps({n_steps}) must be {n_steps} distinct non-negative descending integers")
    return TimeGrid([float(t) for t in ts[start:]] + [float(DATA_TIMESTEP)])


def vp_forward_path(x0: Tensor, grid: TimeGrid, alpha_bars: Sequence[float], seed: Seeds = 0) -> Tensor:
    """The source's forward noising path: a *Markov* chain from ``x0`` on a decreasing grid.

    ``x0`` ``(B, *latent)`` sits at the grid's last point; going up the grid, each point is drawn from
    the exact VP forward transition from the one below,
    ``x_i = sqrt(a_i / a_{i+1}) x_{i+1} + sqrt(1 - a_i / a_{i+1}) xi_i`` (``a_i = alpha_bars[i]``),
    never independently from ``q(x_t | x0)``: consecutive points must be jointly distributed as the
    forward process makes them, or the implied backward increments are not Brownian (method.md §4).
    Each point's marginal is nonetheless ``q(x_{t_i} | x0) = N(sqrt(a_i / a_M) x0, (1 - a_i / a_M) I)``.
    ``xi_i`` is step ``i``'s standard normal from a :class:`~coupled_sde.brownian.GridBrownian` on
    ``grid`` with the given (per-sample) seeds. Returns ``(M + 1, B, *latent)`` with ``path[M] = x0``.
    """
    if len(alpha_bars) != len(grid):
        raise ValueError(f"{len(alpha_bars)} alpha_bars for a grid of {len(grid)} points")
    a = [float(v) for v in alpha_bars]
    if any(not 0.0 < v <= 1.0 for v in a) or any(p > q for p, q in zip(a[:-1], a[1:])):
        raise ValueError("alpha_bars must lie in (0, 1] and not decrease towards the data (the grid's end)")
    B, latent = x0.shape[0], tuple(x0.shape[1:])
    xi = GridBrownian(grid, B, latent, seed=seed, dtype=torch.float32).normals(0, grid.n_steps)[0].to(x0.device, x0.dtype)
    x = x0
    path = [x0]
    for i in range(grid.n_steps - 1, -1, -1):
        ratio = a[i] / a[i + 1]
        x = math.sqrt(ratio) * x + math.sqrt(max(0.0, 1.0 - ratio)) * xi[:, i]
        path.append(x)
    return torch.stack(path[::-1])


class VPMembers(CoupledSDE):
    """``K`` members of a VP backbone on a timestep grid: the DDPM chain (``"sde"``) or DDIM (``"ode"``).

    Args:
        backbone: a VP backbone (``prediction`` ``"epsilon"``/``"v"``, ``alphas_cumprod``,
            ``final_alpha_cumprod``, ``predict(x (K, B, *latent), t: int, encoded)``).
        encoded: ``backbone.encode_conditions`` of the K members' conditions (once per edit).
        n_members: K.
        grid: the grid the system will be solved on (e.g. :func:`vp_grid`), integer timesteps and
            the data point ``-1``; decreasing for ``"sde"``, either direction for ``"ode"``.
        mode: ``"sde"`` (ancestral step, DDIM ``eta``; default ``eta = 1``: DDPM) or ``"ode"`` (``eta = 0``).
        eta: DDIM's ``eta`` in ``(0, 1]`` for ``"sde"``.
        mask: broadcastable to one member's state ``(B, *latent)``, 1 = editable: every member's drift
            is blended towards member ``reference``'s, ``f_k <- f_ref + m (f_k - f_ref)``, so outside
            the mask the members follow the reference exactly (as :class:`FlowMembers`).
        reference: the member the mask blends towards.

    One batched ``backbone.predict`` per drift evaluation; ``model_calls`` counts them.
    """

    calculus = Calculus.ITO

    def __init__(
        self,
        backbone: Any,
        encoded: Any,
        n_members: int,
        grid: TimeGrid | Sequence[float],
        mode: str = "sde",
        *,
        eta: float = 1.0,
        mask: Tensor | None = None,
        reference: int = 0,
    ) -> None:
        check_vp_backbone(backbone)
        if mode not in ("sde", "ode"):
            raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")
        grid = grid if isinstance(grid, TimeGrid) else TimeGrid(grid)
        if mode == "sde":
            if grid.increasing:
                raise ValueError("the ancestral (DDPM) chain runs from noise to data: its grid must decrease")
            if not 0.0 < eta <= 1.0:
                raise ValueError(f"eta must lie in (0, 1] for mode 'sde' (use mode 'ode' for eta = 0), got {eta!r}")
        self.backbone, self.encoded, self.n_members = backbone, encoded, int(n_members)
        self.grid, self.mode, self.eta = grid, mode, float(eta) if mode == "sde" else 0.0
        self.mask, self.reference = mask, int(reference)
        self.noise_type = NoiseType.ADDITIVE if mode == "sde" else None
        self.prediction = backbone.prediction
        self.model_calls = 0
        self.alpha_bars = [vp_alpha_bar(backbone, t) for t in grid]
        self._steps = [self._coefficients(i) for i in range(grid.n_steps)]

    def _coefficients(self, i: int) -> tuple[int, float, float, float, float, float]:
        """Step ``i``'s model timestep ``s``, ``abar_s``, and ``x_next = p x + q eps + sigma z``; ``dt``."""
        t, t_next = self.grid[i], self.grid[i + 1]
        a, a_next = self.alpha_bars[i], self.alpha_bars[i + 1]
        s = max(t, t_next)  # the noisier end: t_i when sampling, t_{i+1} when inverting
        if s == DATA_TIMESTEP:
            raise ValueError("a grid step cannot end and start at the data point")
        var = self.eta**2 * (1.0 - a_next) / (1.0 - a) * (1.0 - a / a_next) if self.eta > 0 else 0.0
        p = math.sqrt(a_next / a)
        q = math.sqrt(max(0.0, 1.0 - a_next - var)) - p * math.sqrt(1.0 - a)
        return int(s), vp_alpha_bar(self.backbone, s), p, q, math.sqrt(max(0.0, var)), t_next - t

    def _step(self, t: float) -> tuple[int, float, float, float, float, float]:
        try:
            i = self.grid.index(t)
        except KeyError:
            raise ValueError(f"t={t!r} is not a point of the grid this VPMembers was built on") from None
        if i >= self.grid.n_steps:
            raise ValueError(
                f"VPMembers was asked for the step from the grid's last point t={t!r}: its steps are DDPM/DDIM "
                "steps on its own grid; solve with the Euler–Maruyama integrator on that grid"
            )
        return self._steps[i]

    def epsilon(self, t: int, abar: float, y: Tensor) -> Tensor:
        """The backbone's (guided) noise prediction for all members at timestep ``t``: one batched call."""
        self.model_calls += 1
        out = self.backbone.predict(y, t, self.encoded)
        if out.shape != y.shape:
            raise ValueError(f"the backbone returned shape {tuple(out.shape)} for members of shape {tuple(y.shape)}")
        out = out.to(y.dtype)
        if self.prediction == "v":
            return torch.add(out * math.sqrt(abar), y, alpha=math.sqrt(1.0 - abar))
        return out

    def drift(self, t: float, y: Tensor) -> Tensor:
        s, abar_s, p, q, _, dt = self._step(t)
        eps = self.epsilon(s, abar_s, y)
        f = torch.add(y * (p - 1.0), eps, alpha=q).mul_(1.0 / dt)  # (mu - x) / dt
        if self.mask is not None:
            r = self.reference
            f = f[r] + self.mask.to(f) * (f - f[r])
        return f

    def diffusion(self, t: float, y: Tensor) -> float:
        _, _, _, _, sigma, dt = self._step(t)
        return sigma / math.sqrt(abs(dt))
