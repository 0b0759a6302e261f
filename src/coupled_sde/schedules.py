"""Noise schedules: ``x_t = alpha(t) x0 + sigma(t) eps``, the one fact every model family shares.

A schedule tells the editing engine everything it needs about a model family without knowing the
model: the sampling grid for ``n`` steps and a latent shape, the conversions between what networks
predict (flow velocity ``u = eps - x0``, ``eps``, ``v = alpha eps - sigma x0``, ``x0``), the forward
SDE ``dX = f(t) X dt + g(t) dW`` whose marginals are the schedule's, the family of reverse-time SDEs
sharing those marginals (noise scaled by ``eta``: ``eta = 0`` the probability-flow ODE, ``eta = 1``
Anderson's reverse SDE; Song et al., ICLR 2021, eq. 4–6 and App. D.1; Zhang & Scott 2025, §3), the
DDIM/DDPM step between two grid points (Song, Meng & Ermon, ICLR 2021, eq. 12), and the exact Markov
transitions of the forward process (the source path of sync-SDE must be Markov, Zhang & Scott §3).

Two implementations cover the shipped model families:

* :class:`RectifiedFlow` (FLUX, SD3, the digits model, the closed-form flow backbone): time is the
  noise level ``sigma`` in ``[0, 1]``, ``alpha = 1 - sigma``; the grid is diffusers'
  ``FlowMatchEulerDiscreteScheduler``'s, with a static ``shift`` (SD3) or FLUX's resolution-dependent
  dynamic shift ``mu = calculate_shift(tokens)``.
* :class:`DiscreteVP` (Stable Diffusion 1.x/2.x/XL): time is the integer training timestep, with
  ``alpha^2 = alphas_cumprod[t]``; the grid is the DDIM scheduler's timesteps followed by the *data
  point* :data:`DATA_TIME` ``= -1`` whose ``alpha^2`` is DDIM's ``final_alpha_cumprod``. Its time is
  discrete: it has no continuous drift, only the exact DDIM/DDPM step
  (:class:`coupled_sde.editing.ancestral.Ancestral`).

All coefficients are Python floats (float64) computed on the host; tensors are only touched by
:meth:`Schedule.to_epsilon` and friends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .grid import TimeGrid

__all__ = [
    "DATA_TIME",
    "DiscreteVP",
    "PREDICTIONS",
    "RectifiedFlow",
    "Schedule",
    "calculate_shift",
    "vp_alphas_cumprod",
    "vp_timesteps",
]

Tensor = torch.Tensor
#: What a network may predict: flow velocity ``u = eps - x0``, noise, ``v`` (Salimans & Ho 2022), or data.
PREDICTIONS = ("flow", "epsilon", "v", "x0")
#: The discrete VP grid's last point, "after the last timestep", where source latents live.
DATA_TIME = -1.0


class Schedule:
    """``x_t = alpha(t) x0 + sigma(t) eps``. Subclasses give :meth:`alpha_sq`, :meth:`sigma_sq`, :meth:`grid`.

    Squares are the primitive (exact for VP's ``alphas_cumprod``); :meth:`alpha` and :meth:`sigma`
    are their roots.
    """

    #: Whether time is continuous (drifts and the Euler/Heun integrators are defined) or a set of
    #: points (only the DDIM/DDPM step is).
    continuous: bool = True
    #: ``alpha^2 + sigma^2 == 1`` (variance preserving), which simplifies the conversions.
    variance_preserving: bool = False
    #: The time of clean data.
    data_time: float = 0.0
    #: The integrator the editing methods use unless told otherwise.
    default_integrator: str = "euler"
    #: How sync-SDE draws the source's forward path by default (see :meth:`forward_path`).
    default_path_rule: str = "exact"

    def alpha_sq(self, t: float) -> float:
        raise NotImplementedError

    def sigma_sq(self, t: float) -> float:
        raise NotImplementedError

    def alpha(self, t: float) -> float:
        return math.sqrt(self.alpha_sq(t))

    def sigma(self, t: float) -> float:
        return math.sqrt(self.sigma_sq(t))

    def grid(self, n_steps: int, latent_shape: Sequence[int] = ()) -> TimeGrid:
        """The sampling grid of ``n_steps`` steps from the noisiest time down to :attr:`data_time`."""
        raise NotImplementedError

    def model_time(self, t: float) -> float | int:
        """What the network is given for grid time ``t``."""
        return float(t)

    def check_start(self, t: float, ode: bool = False) -> None:
        """A clear error when an edit cannot start at ``t`` (``alpha(t) = 0``: nothing of the data is left).

        ``ode``: the edit integrates the probability-flow ODE only (no reverse-SDE drift), which some
        schedules allow at their pure-noise end (rectified flow at sigma = 1).
        """
        if self.alpha_sq(t) <= 0.0:
            raise ValueError(
                f"the edit would start at t={t:g}, where alpha = 0 (pure noise: the drift divides by alpha, 0/0 in the "
                "reference code); use start >= 1"
            )

    # -- the forward process ----------------------------------------------------------------------

    def forward_coefficients(self, t: float) -> tuple[float, float]:
        """``(f, g)`` of the forward SDE ``dX = f X dt + g dW`` with this schedule's marginals:
        ``f = d log alpha / dt``, ``g^2 = d sigma^2 / dt - 2 f sigma^2``."""
        raise NotImplementedError

    def transition(self, s: float, t: float) -> tuple[float, float]:
        """The exact forward transition from the less noisy time ``s`` to ``t``: ``x_t = a x_s + b z``,
        ``a = alpha_t / alpha_s``, ``b^2 = sigma_t^2 - a^2 sigma_s^2``."""
        a_sq = self.alpha_sq(t) / self.alpha_sq(s)
        return math.sqrt(a_sq), math.sqrt(max(0.0, self.sigma_sq(t) - a_sq * self.sigma_sq(s)))

    def forward_path(self, x0: Tensor, grid: TimeGrid, normals: Tensor, rule: str = "exact") -> Tensor:
        """The source's forward noising path on a decreasing ``grid`` ending at the data time.

        ``normals`` ``(B, n_steps, *latent)`` are step ``i``'s standard normals. Returns
        ``(n_steps + 1, B, *latent)`` with ``path[-1] = x0`` and, going up the grid, each point drawn
        from the exact transition from the one below (``rule="exact"``): a Markov chain, never
        independent draws from ``q(x_t | x0)``.
        """
        if rule != "exact":
            raise ValueError(f"the {type(self).__name__} schedule draws its forward path with rule 'exact', not {rule!r}")
        x, path = x0, [x0]
        for i in range(grid.n_steps - 1, -1, -1):
            a, b = self.transition(grid[i + 1], grid[i])
            x = a * x + b * normals[:, i].to(x0)
            path.append(x)
        return torch.stack(path[::-1])

    # -- the reverse processes --------------------------------------------------------------------

    def reverse_drift(self, x: Tensor, prediction: Tensor, kind: str, t: float, eta: float) -> Tensor:
        """Drift of the reverse-time SDE with noise ``eta g`` that shares the model's marginals, in the
        forward time variable: ``f x - (1 + eta^2)/2 g^2 score`` with ``score = -eps / sigma``."""
        f, g = self.forward_coefficients(t)
        eps = self.to_epsilon(prediction, x, t, kind)
        return torch.add(x * f, eps, alpha=(1.0 + eta * eta) / 2.0 * g * g / self.sigma(t))

    def reverse_diffusion(self, t: float, eta: float) -> float:
        """``eta g(t)``: the noise of that reverse SDE."""
        return eta * self.forward_coefficients(t)[1]

    def ddim_coefficients(self, t: float, t_next: float, eta: float) -> tuple[float, float, float]:
        """One DDIM step from ``t`` to ``t_next`` (Song, Meng & Ermon 2021, eq. 12): ``x' = p x + q eps + s z``.

        ``s^2 = eta^2 sigma'^2 / sigma^2 (1 - alpha^2 / alpha'^2)`` (the DDPM posterior variance at
        ``eta = 1``, Ho et al. 2020; only towards the data), ``p = alpha' / alpha``,
        ``q = sqrt(sigma'^2 - s^2) - p sigma``.
        """
        a, a_next = self.alpha_sq(t), self.alpha_sq(t_next)
        s2, s2_next = self.sigma_sq(t), self.sigma_sq(t_next)
        var = eta**2 * s2_next / s2 * (1.0 - a / a_next) if eta > 0 else 0.0
        p = math.sqrt(a_next / a)
        q = math.sqrt(max(0.0, s2_next - var)) - p * math.sqrt(s2)
        return p, q, math.sqrt(max(0.0, var))

    # -- predictions --------------------------------------------------------------------------------

    def to_epsilon(self, prediction: Tensor, x: Tensor, t: float, kind: str) -> Tensor:
        """The noise ``eps`` implied by a network output of kind ``kind`` at ``(x, t)``."""
        if kind == "epsilon":
            return prediction
        a, s = self.alpha(t), self.sigma(t)
        if kind == "flow":  # u = eps - x0, x = a x0 + s eps
            return torch.add(x, prediction, alpha=a).mul_(1.0 / (a + s))
        if kind == "v":  # v = a eps - s x0
            out = torch.add(prediction * a, x, alpha=s)
            return out if self.variance_preserving else out.mul_(1.0 / (a * a + s * s))
        if kind == "x0":
            return torch.add(x, prediction, alpha=-a).mul_(1.0 / s)
        raise ValueError(f"unknown prediction {kind!r}; choose one of {PREDICTIONS}")

    def to_x0(self, prediction: Tensor, x: Tensor, t: float, kind: str) -> Tensor:
        """The data estimate ``x0`` implied by a network output."""
        if kind == "x0":
            return prediction
        eps = self.to_epsilon(prediction, x, t, kind)
        return torch.add(x, eps, alpha=-self.sigma(t)).mul_(1.0 / self.alpha(t))

    def convert(self, prediction: Tensor, x: Tensor, t: float, kind: str, to: str) -> Tensor:
        """A network output of kind ``kind`` re-expressed as kind ``to`` (``flow``, ``epsilon``, ``v``, ``x0``)."""
        if kind == to:
            return prediction
        eps, x0 = self.to_epsilon(prediction, x, t, kind), self.to_x0(prediction, x, t, kind)
        a, s = self.alpha(t), self.sigma(t)
        return {"epsilon": eps, "x0": x0, "flow": eps - x0, "v": a * eps - s * x0}[_check_kind(to)]


def _check_kind(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction {kind!r}; choose one of {PREDICTIONS}")
    return kind


def calculate_shift(
    image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5, max_shift: float = 1.15
) -> float:
    """FLUX's resolution-dependent shift ``mu``, linear in the number of image tokens (the formula of
    diffusers' ``pipeline_flux.calculate_shift``), in Python floats."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + base_shift - slope * base_seq_len


class RectifiedFlow(Schedule):
    """Rectified flow ``x_sigma = (1 - sigma) x0 + sigma eps`` (Liu et al. 2023; Esser et al. 2024).

    Args:
        shift: static shift ``sigma = shift s / (1 + (shift - 1) s)`` (SD3: 3.0; 1 = none).
        dynamic: FLUX's dynamic shift parameters ``(base_seq_len, max_seq_len, base_shift, max_shift)``;
            then ``sigma = e^mu / (e^mu + 1/s - 1)`` with ``mu = calculate_shift(tokens, ...)``.
        linear_shift: ``time_shift_type="linear"``: ``sigma = mu / (mu + 1/s - 1)``.
        patch: latent pixels per token side (FLUX packs 2x2 patches): ``tokens = (h/p)(w/p)``.
        sigmas_fn: ``sigmas_fn(n_steps, tokens) -> n_steps + 1`` noise levels, for scheduler options
            beyond shifting (Karras sigmas, ...) that a backbone delegates to its scheduler.

    The grid is ``s = linspace(1, 1/N, N)`` shifted, then ``sigma_N = 0`` (diffusers'
    ``FlowMatchEulerDiscreteScheduler``, in float64).
    """

    default_path_rule = "midpoint"

    def __init__(
        self,
        shift: float = 1.0,
        dynamic: tuple[int, int, float, float] | None = None,
        *,
        linear_shift: bool = False,
        patch: int = 1,
        sigmas_fn: Callable[[int, int], Tensor] | None = None,
    ) -> None:
        self.shift, self.dynamic, self.linear_shift = float(shift), dynamic, bool(linear_shift)
        self.patch, self.sigmas_fn = int(patch), sigmas_fn

    def __repr__(self) -> str:
        how = f"dynamic={self.dynamic}" if self.dynamic else f"shift={self.shift:g}"
        return f"RectifiedFlow({how})"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], patch: int = 1, sigmas_fn: Callable | None = None) -> RectifiedFlow:
        """From a ``FlowMatchEulerDiscreteScheduler`` config (its ``shift``, dynamic-shifting options)."""
        dynamic = None
        if config.get("use_dynamic_shifting", False):
            dynamic = (
                int(config.get("base_image_seq_len", 256)),
                int(config.get("max_image_seq_len", 4096)),
                float(config.get("base_shift", 0.5)),
                float(config.get("max_shift", 1.15)),
            )
        linear = config.get("time_shift_type", "exponential") == "linear"
        return cls(float(config.get("shift", 1.0)), dynamic, linear_shift=linear, patch=patch, sigmas_fn=sigmas_fn)

    def alpha_sq(self, t: float) -> float:
        return (1.0 - t) ** 2

    def sigma_sq(self, t: float) -> float:
        return t * t

    def alpha(self, t: float) -> float:
        return 1.0 - t

    def sigma(self, t: float) -> float:
        return float(t)

    def tokens(self, latent_shape: Sequence[int]) -> int:
        """Image tokens of a latent ``(..., h, w)`` (what the dynamic shift depends on)."""
        if len(latent_shape) < 2:
            return 0
        return (int(latent_shape[-2]) // self.patch) * (int(latent_shape[-1]) // self.patch)

    def mu(self, latent_shape: Sequence[int]) -> float | None:
        """The dynamic shift for this latent shape (``None`` for a static shift)."""
        return None if self.dynamic is None else calculate_shift(self.tokens(latent_shape), *self.dynamic)

    def grid(self, n_steps: int, latent_shape: Sequence[int] = ()) -> TimeGrid:
        return TimeGrid(self.sigmas(n_steps, self.tokens(latent_shape)))

    def sigmas(self, n_steps: int, tokens: int = 0) -> Tensor:
        """The ``n_steps + 1`` float64 noise levels for a latent of ``tokens`` image tokens."""
        n = _check_steps(n_steps)
        if self.sigmas_fn is not None:
            return torch.as_tensor(self.sigmas_fn(n, tokens), dtype=torch.float64)
        s = np.linspace(1.0, 1.0 / n, n)
        mu = None if self.dynamic is None else calculate_shift(tokens, *self.dynamic)
        if mu is None:
            sig = self.shift * s / (1.0 + (self.shift - 1.0) * s)
        elif self.linear_shift:
            sig = mu / (mu + (1.0 / s - 1.0))
        else:
            sig = math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0))
        return torch.from_numpy(np.append(sig, 0.0))

    def check_start(self, t: float, ode: bool = False) -> None:
        # the probability-flow ODE dx/dsigma = u is regular at sigma = 1 (RF-Solver and FireFlow invert to it)
        if ode and t == 1.0:
            return
        if not 0.0 <= t < 1.0:
            raise ValueError(
                f"the edit would start at sigma={t:g}: the rectified-flow SDE divides by (1 - sigma), which is 0 "
                "there (0/0 in the reference code); use start >= 1"
            )

    def forward_coefficients(self, t: float) -> tuple[float, float]:
        """``f = -1/(1 - sigma)``, ``g = sqrt(2 sigma / (1 - sigma))`` (Zhang & Scott, §3)."""
        self.check_start(t)
        return -1.0 / (1.0 - t), math.sqrt(2.0 * t / (1.0 - t))

    def reverse_drift(self, x: Tensor, prediction: Tensor, kind: str, t: float, eta: float) -> Tensor:
        """With a velocity ``u``: ``(1 + eta^2) u + eta^2 x / (1 - sigma)`` (``x/(1-sigma) + 2u`` at
        ``eta = 1``, the paper's ``-b``; ``u`` itself at ``eta = 0``)."""
        if kind != "flow":
            return super().reverse_drift(x, prediction, kind, t, eta)
        if eta == 0:
            return prediction
        self.check_start(t)
        e2 = eta * eta
        return torch.add(x, prediction, alpha=(1.0 + e2) * (1.0 - t) / e2).mul_(e2 / (1.0 - t))

    def transition(self, s: float, t: float) -> tuple[float, float]:
        a = (1.0 - t) / (1.0 - s)
        return a, math.sqrt(max(0.0, t * t - a * a * s * s))

    @staticmethod
    def midpoint_path_scale(s: float, s_next: float) -> float:
        """The reference code's per-step scale ``sqrt(2 m)/(1 - m)^1.5 sqrt(|Δ|)`` of ``B`` in
        ``X = (1 - sigma)(x0 + B)``, at the midpoint ``m = (s + s_next)/2`` (it under-estimates the
        variance near sigma = 1)."""
        mid = 0.5 * (s + s_next)
        return math.sqrt(2.0 * mid) / (1.0 - mid) ** 1.5 * math.sqrt(abs(s - s_next))

    @staticmethod
    def exact_path_scale(s: float, s_next: float) -> float:
        """Exact standard deviation of ``B_s - B_s'``: ``Var B_sigma = (sigma / (1 - sigma))^2``."""
        a, b = s / (1.0 - s), s_next / (1.0 - s_next)
        return math.sqrt(abs(a * a - b * b))

    def forward_path(self, x0: Tensor, grid: TimeGrid, normals: Tensor, rule: str = "midpoint") -> Tensor:
        """``X_i = (1 - sigma_i)(x0 + B_i)``, ``B_i = B_{i+1} + m_i xi_i`` with ``m_i`` by the reference
        code's midpoint rule or ``rule="exact"`` (independent increments of the exact variance; the
        same law as the Markov transitions)."""
        if rule not in ("midpoint", "exact"):
            raise ValueError(f"forward path rule must be 'midpoint' or 'exact', got {rule!r}")
        self.check_start(grid[0])
        scale = self.midpoint_path_scale if rule == "midpoint" else self.exact_path_scale
        b, path = torch.zeros_like(x0), [x0]  # X_M = x0 exactly
        for i in range(grid.n_steps - 1, -1, -1):
            b = b + scale(grid[i], grid[i + 1]) * normals[:, i].to(x0.dtype)
            path.append((1.0 - grid[i]) * (x0 + b))
        return torch.stack(path[::-1])


def vp_alphas_cumprod(config: Mapping[str, Any], fallback: Tensor | None = None) -> Tensor:
    """``alphas_cumprod`` in float64 from a DDPM/DDIM scheduler config (``num_train_timesteps``,
    ``beta_schedule`` linear / scaled_linear / squaredcos_cap_v2, ``beta_start``, ``beta_end``,
    ``trained_betas``). diffusers computes them in float32; the original LDM code in float64. Other
    options (``rescale_betas_zero_snr``) use ``fallback`` (the scheduler's own values)."""
    n = int(config.get("num_train_timesteps", 1000))
    schedule = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    if config.get("rescale_betas_zero_snr", False) or schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        if fallback is None:
            raise ValueError(f"cannot compute alphas_cumprod for {schedule!r} / zero-SNR betas without the scheduler's values")
        return fallback.to(torch.float64).cpu()
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    elif schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    else:
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        alpha_bar = torch.cos((steps + 0.008) / 1.008 * torch.pi / 2) ** 2
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cumprod(1.0 - betas, dim=0)


def vp_timesteps(n_steps: int, n_train: int = 1000, spacing: str = "leading", steps_offset: int = 0) -> Tensor:
    """Descending int64 timesteps as ``DDIMScheduler.set_timesteps`` spaces them: "leading"
    ``arange(N) * (T // N) + offset`` reversed (``981, ..., 1`` for SD at N = 50), "trailing"
    ``round(arange(T, 0, -T/N)) - 1``, "linspace" ``round(linspace(0, T - 1, N))`` reversed."""
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or not 1 <= n_steps <= n_train:
        raise ValueError(f"n_steps must be an integer in [1, {n_train}], got {n_steps!r}")
    n = int(n_steps)
    if spacing == "leading":
        ts = (np.arange(n) * (n_train // n)).round()[::-1] + int(steps_offset)
    elif spacing == "trailing":
        ts = np.round(np.arange(n_train, 0, -n_train / n)) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, n_train - 1, n).round()[::-1]
    else:
        raise ValueError(f"unsupported timestep_spacing {spacing!r}; expected 'leading', 'trailing' or 'linspace'")
    return torch.from_numpy(ts.astype(np.int64).copy())


class DiscreteVP(Schedule):
    """Discrete variance-preserving diffusion (Ho et al. 2020): ``alpha_t^2 = alphas_cumprod[t]``.

    Args:
        alphas_cumprod: float64 ``(T,)``, indexed by integer timestep.
        final_alpha_cumprod: ``alpha^2`` at :data:`DATA_TIME` (DDIM's value after the last timestep:
            1.0 with ``set_alpha_to_one``, else ``alphas_cumprod[0]``, SD's setting).
        spacing, steps_offset: the DDIM timestep spacing (SD: "leading", 1).

    Source latents live at :data:`DATA_TIME`. The network is given the integer timestep.
    """

    continuous = False
    variance_preserving = True
    data_time = DATA_TIME
    default_integrator = "ddim"

    def __init__(
        self, alphas_cumprod: Tensor, final_alpha_cumprod: float | None = None, spacing: str = "leading", steps_offset: int = 1
    ) -> None:
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
        if ac.dim() != 1 or not ((ac > 0) & (ac <= 1)).all():
            raise ValueError("alphas_cumprod must be a 1-D tensor of values in (0, 1]")
        self.alphas_cumprod = ac
        self._ac = ac.tolist()
        self.final_alpha_cumprod = float(ac[0]) if final_alpha_cumprod is None else float(final_alpha_cumprod)
        self.spacing, self.steps_offset = spacing, int(steps_offset)

    def __repr__(self) -> str:
        return f"DiscreteVP(T={len(self._ac)}, spacing={self.spacing!r})"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], fallback: Tensor | None = None) -> DiscreteVP:
        """From a DDPM/DDIM scheduler config (betas, ``set_alpha_to_one``, spacing, offset)."""
        ac = vp_alphas_cumprod(config, fallback)
        final = 1.0 if config.get("set_alpha_to_one", True) else float(ac[0])
        return cls(ac, final, config.get("timestep_spacing", "leading"), int(config.get("steps_offset", 0)))

    @classmethod
    def scaled_linear(cls, n_train: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012, **kw: Any) -> DiscreteVP:
        """Stable Diffusion's "scaled_linear" betas (``linspace(sqrt(b0), sqrt(b1), T)^2``)."""
        return cls(vp_alphas_cumprod({"num_train_timesteps": n_train, "beta_schedule": "scaled_linear",
                                      "beta_start": beta_start, "beta_end": beta_end}), **kw)  # fmt: skip

    @property
    def n_train(self) -> int:
        return len(self._ac)

    def alpha_sq(self, t: float) -> float:
        if t == DATA_TIME:
            return self.final_alpha_cumprod
        i = int(t)
        if i != t or not 0 <= i < len(self._ac):
            raise ValueError(f"time {t!r} is neither a training timestep in [0, {len(self._ac) - 1}] nor the data point -1")
        return self._ac[i]

    def sigma_sq(self, t: float) -> float:
        return 1.0 - self.alpha_sq(t)

    def timesteps(self, n_steps: int) -> Tensor:
        """``n_steps`` descending integer timesteps (``981, 961, ..., 1`` for SD at 50)."""
        return vp_timesteps(n_steps, len(self._ac), self.spacing, self.steps_offset)

    def grid(self, n_steps: int, latent_shape: Sequence[int] = ()) -> TimeGrid:
        ts = [int(t) for t in self.timesteps(n_steps)]
        if len(set(ts)) != len(ts) or ts[-1] < 0:
            raise ValueError(f"timesteps({n_steps}) must be {n_steps} distinct non-negative integers")
        return TimeGrid([float(t) for t in ts] + [DATA_TIME])

    def model_time(self, t: float) -> int:
        if t == DATA_TIME:
            raise ValueError("the network is never evaluated at the data point")
        return int(t)

    def forward_coefficients(self, t: float) -> tuple[float, float]:
        """Per training step: ``beta_t = 1 - abar_t / abar_{t-1}``, ``f = -beta/2``, ``g = sqrt(beta)`` (the
        VP-SDE of Song et al. 2021 at unit time steps; the editing methods use exact DDIM steps instead)."""
        i = int(t)
        beta = 1.0 - self.alpha_sq(t) / (self._ac[i - 1] if i >= 1 else 1.0) if t != DATA_TIME else 0.0
        return -0.5 * beta, math.sqrt(max(beta, 0.0))

    def transition(self, s: float, t: float) -> tuple[float, float]:
        ratio = self.alpha_sq(t) / self.alpha_sq(s)
        return math.sqrt(ratio), math.sqrt(max(0.0, 1.0 - ratio))


def _check_steps(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n!r}")
    return int(n)
