"""A closed-form VP diffusion backbone: exact noise predictions of Gaussian-mixture data.

The VP counterpart of :class:`~coupled_sde.backends.analytic.GaussianMixtureBackbone`, with the
interface of :class:`~coupled_sde.backends.diffusers.stable_diffusion.StableDiffusionBackbone`:
a discrete ``alphas_cumprod`` schedule (Stable Diffusion's "scaled_linear" betas 0.00085..0.012 over
1000 training steps by default), integer timesteps spaced like diffusers' ``DDIMScheduler`` with
"leading" spacing and ``steps_offset=1`` (``981, 961, ..., 1`` for 50 steps), and a ``predict``
that returns the *exact* ``E[eps | x_t = x]`` (``prediction="epsilon"``, Ho et al. 2020) or the
exact ``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (``prediction="v"``, Salimans & Ho 2022) of
the mixture noised by ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

Conditioning is the analytic backbone's: ``Condition(prompt=j)`` is component ``j``,
``Condition(prompt=None)`` the whole mixture (the null prompt), and ``guidance`` a classifier-free
guidance scale on the raw prediction, ``out_null + w (out_j - out_null)`` (``w = 1``, the default,
is exact), where a ``negative_prompt`` replaces the null prompt. So the VP editing methods
(:mod:`coupled_sde.editing.vp_methods`) can be checked against exact answers: target marginals,
exact reconstruction, closeness to the source.
"""

from __future__ import annotations

import math

import torch

from ..problems import GaussianMixture
from .analytic import MixtureMember, encode_mixture_conditions
from .base import Condition, Prediction

__all__ = ["GaussianMixtureVPBackbone", "scaled_linear_alphas_cumprod", "leading_timesteps"]


def scaled_linear_alphas_cumprod(n_train_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """``alphas_cumprod`` in float64 for LDM / Stable Diffusion's "scaled_linear" betas,
    ``beta = linspace(sqrt(beta_start), sqrt(beta_end), T)^2``."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n_train_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def leading_timesteps(n_steps: int, n_train_steps: int = 1000, steps_offset: int = 1) -> torch.Tensor:
    """Descending int64 timesteps as ``DDIMScheduler.set_timesteps`` spaces them with "leading" spacing:
    ``arange(N) * (T // N) + steps_offset``, reversed."""
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or not 1 <= n_steps <= n_train_steps:
        raise ValueError(f"n_steps must be an integer in [1, {n_train_steps}], got {n_steps!r}")
    n = int(n_steps)
    return (torch.arange(n, dtype=torch.int64) * (n_train_steps // n)).flip(0) + int(steps_offset)


class GaussianMixtureVPBackbone:
    """Exact VP-diffusion predictions of a Gaussian mixture, conditioned per member.

    Args:
        mixture: the data distribution; its components are the classes.
        n_train_steps: ``T``, the number of training timesteps (1000 like SD).
        beta_start, beta_end: the "scaled_linear" schedule's endpoints (SD's 0.00085, 0.012).
        prediction: ``"epsilon"`` (SD 1.x, SD 2.x base) or ``"v"`` (SD 2.x 768-v).
        set_alpha_to_one: DDIM's convention for the point after the last timestep: ``False`` (SD's
            setting) gives ``final_alpha_cumprod = alphas_cumprod[0]``, ``True`` gives 1.0.
        steps_offset: added to the "leading" timesteps (SD: 1).
    """

    def __init__(
        self,
        mixture: GaussianMixture,
        n_train_steps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        *,
        prediction: Prediction = "epsilon",
        set_alpha_to_one: bool = False,
        steps_offset: int = 1,
    ) -> None:
        if prediction not in ("epsilon", "v"):
            raise ValueError(f"prediction must be 'epsilon' or 'v', got {prediction!r}")
        self.mixture = mixture
        self.prediction: Prediction = prediction
        self.n_train_steps = int(n_train_steps)
        self.steps_offset = int(steps_offset)
        self.alphas_cumprod = scaled_linear_alphas_cumprod(self.n_train_steps, beta_start, beta_end)
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(self.alphas_cumprod[0])
        self.calls = 0

    def timesteps(self, n_steps: int) -> torch.Tensor:
        """``n_steps`` descending integer timesteps, "leading" spacing (``981, ..., 1`` for 50)."""
        return leading_timesteps(n_steps, self.n_train_steps, self.steps_offset)

    def encode_conditions(self, conditions: list[Condition]) -> list[MixtureMember]:
        """Per member: component (``None`` = the whole mixture), CFG scale, negative component."""
        return encode_mixture_conditions(self.mixture, conditions)

    def _raw(self, x: torch.Tensor, abar: float, component: int | None) -> torch.Tensor:
        eps = self.mixture.vp_epsilon(x, abar, component)
        if self.prediction == "epsilon":
            return eps
        # v = sqrt(a) eps - sqrt(1 - a) x0 with x0 = (x - sqrt(1 - a) eps) / sqrt(a)
        return eps / math.sqrt(abar) - math.sqrt((1.0 - abar) / abar) * x

    def predict(self, x: torch.Tensor, t: int | float, encoded: list[MixtureMember]) -> torch.Tensor:
        """The guided prediction for all K members of ``x`` ``(K, B, *event)`` at integer timestep ``t``."""
        if x.shape[0] != len(encoded):
            raise ValueError(f"state has {x.shape[0]} members but {len(encoded)} conditions were encoded")
        if int(t) != t or not 0 <= int(t) < self.n_train_steps:
            raise ValueError(f"t must be an integer timestep in [0, {self.n_train_steps - 1}], got {t!r}")
        abar = float(self.alphas_cumprod[int(t)])
        self.calls += 1
        outs = []
        for k, m in enumerate(encoded):
            out = self._raw(x[k], abar, m.component)
            if m.scale != 1.0:
                null = self._raw(x[k], abar, m.negative)
                out = null + m.scale * (out - null)
            outs.append(out)
        return torch.stack(outs)
