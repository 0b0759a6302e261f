"""A tiny class-conditional rectified-flow model and a classifier for 8x8 handwritten digits.

Both networks are trained by ``scripts/train_digits.py`` on the training split of scikit-learn's
``load_digits()`` (1797 8x8 grayscale digits, pixel values 0..16) and their float32 weights ship
inside the package (``weights/``), so a demo runs on a fresh CPU machine with no download and no
scikit-learn.

Conventions (shared by the training script, the tests and the digits backbone):

* Pixels are scaled by ``x = pixels / 8 - 1`` into [-1, 1]; images are float32 ``(N, 1, 8, 8)``.
* Rectified flow as in diffusers: ``x_sigma = (1 - sigma) x0 + sigma eps`` with ``sigma`` in
  [0, 1] (``sigma = 0`` is data). ``u = net(x_sigma, sigma, label)`` estimates ``eps - x0``.
* ``label`` is a long tensor in ``0..10``; :data:`NULL_CLASS` (10) is the unconditional "null"
  class used for classifier-free guidance: ``u = u_null + w (u_class - u_null)``.
* Sampling integrates the probability-flow ODE ``dx/dsigma = u`` from ``sigma = 1`` (pure
  ``N(0, I)`` noise) down to ``sigma = 0``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._weights import load_bundle, load_network

__all__ = [
    "NULL_CLASS",
    "NUM_CLASSES",
    "DigitsFlowNet",
    "DigitsClassifier",
    "load_flow_network",
    "load_classifier",
    "load_heldout",
    "pixels_to_model",
    "model_to_pixels",
]

#: Number of digit classes.
NUM_CLASSES: int = 10
#: Label of the null (unconditional) class used for classifier-free guidance.
NULL_CLASS: int = 10

_WEIGHTS_PACKAGE = "coupled_sde.backends.digits"


def pixels_to_model(pixels: Tensor) -> Tensor:
    """Map raw digit pixels (0..16, any shape ``(N, 8, 8)`` or ``(N, 1, 8, 8)``) to model space.

    Returns float32 ``(N, 1, 8, 8)`` in [-1, 1] via ``pixels / 8 - 1``.
    """
    x = pixels.to(torch.float32) / 8.0 - 1.0
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x


def model_to_pixels(x: Tensor) -> Tensor:
    """Inverse of :func:`pixels_to_model`: float ``(N, 1, 8, 8)`` in [-1, 1] to 0..16 (float, clamped)."""
    return ((x.clamp(-1.0, 1.0) + 1.0) * 8.0).to(torch.float32)


def sinusoidal_embedding(sigma: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Transformer-style sinusoidal features of ``scale * sigma`` (``(N,)`` -> ``(N, dim)``).

    ``sigma`` lives in [0, 1]; scaling it by 1000 (as diffusion models do with their timesteps)
    spreads the frequencies ``1 .. 1e-4`` over a useful range.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
    args = scale * sigma.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _FiLMResBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, SiLU, 3x3 conv) x2 with FiLM conditioning.

    The conditioning vector yields a per-channel scale and shift applied after the second
    normalisation; the FiLM projection is zero-initialised so each block starts as an identity
    modulation.
    """

    def __init__(self, channels: int, emb_dim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        return x + self.conv2(F.silu(h))


class DigitsFlowNet(nn.Module):
    """Class-conditional velocity network ``u = net(x_sigma, sigma, label)`` for 8x8 digits.

    A full-resolution residual conv net (the images are only 8x8, so no down-sampling is needed:
    ``num_blocks`` blocks of two 3x3 convs already see the whole image) conditioned by FiLM on
    ``emb = MLP(sinusoidal(sigma)) + Embedding(label)``. ``label`` ranges over ``0..10`` with 10 the
    null class for classifier-free guidance.

    Args:
        channels: width of the conv trunk.
        num_blocks: number of residual blocks.
        emb_dim: width of the conditioning vector.
    """

    def __init__(self, channels: int = 64, num_blocks: int = 3, emb_dim: int = 128) -> None:
        super().__init__()
        self.config: dict[str, int] = {"channels": channels, "num_blocks": num_blocks, "emb_dim": emb_dim}
        self.emb_dim = emb_dim
        self.sigma_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(NUM_CLASSES + 1, emb_dim)
        self.conv_in = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.ModuleList([_FiLMResBlock(channels, emb_dim) for _ in range(num_blocks)])
        self.norm_out = nn.GroupNorm(8, channels)
        self.conv_out = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, sigma: Tensor, label: Tensor) -> Tensor:
        """Velocity ``eps - x0`` estimate.

        Args:
            x: noisy images ``(N, 1, 8, 8)`` float32.
            sigma: noise levels ``(N,)`` (a scalar tensor is broadcast) in [0, 1].
            label: class labels ``(N,)`` long in ``0..10`` (10 = null / unconditional).

        Returns:
            ``(N, 1, 8, 8)`` float32.
        """
        n = x.shape[0]
        sigma = sigma.to(device=x.device, dtype=torch.float32).reshape(-1).expand(n) if sigma.numel() == 1 else sigma
        emb = self.sigma_mlp(sinusoidal_embedding(sigma, self.emb_dim)) + self.label_emb(label)
        emb = F.silu(emb)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class DigitsClassifier(nn.Module):
    """Small CNN mapping 8x8 digits in [-1, 1] ``(N, 1, 8, 8)`` to 10 class logits.

    Used to measure sample quality: generated digits should be recognised as their class. Two
    conv stages (8x8 -> 4x4 -> 2x2) followed by a linear head with dropout.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.config: dict[str, int] = {"width": width}
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(2 * w * 4, NUM_CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, 10)`` for images ``(N, 1, 8, 8)`` in [-1, 1]."""
        return self.head(self.features(x))


def load_flow_network(device: str | torch.device = "cpu") -> DigitsFlowNet:
    """The shipped rectified-flow network (EMA weights), float32, in eval mode, on ``device``.

    The architecture hyper-parameters are stored next to the weights in ``weights/flow.pt``.
    """
    return load_network(DigitsFlowNet, _WEIGHTS_PACKAGE, "flow.pt", device)


def load_classifier(device: str | torch.device = "cpu") -> DigitsClassifier:
    """The shipped digit classifier, float32, in eval mode, on ``device``."""
    return load_network(DigitsClassifier, _WEIGHTS_PACKAGE, "classifier.pt", device)


def load_heldout() -> tuple[Tensor, Tensor]:
    """The held-out (test-split) digits that neither network saw during training.

    Returns ``(images, labels)``: uint8 ``(N, 8, 8)`` raw pixels in 0..16 (use
    :func:`pixels_to_model` for the model scaling) and long ``(N,)`` labels. Stored inside the
    package so that demos need neither scikit-learn nor a download.
    """
    bundle = load_bundle(_WEIGHTS_PACKAGE, "heldout.pt", "cpu")
    return bundle["images"], bundle["labels"]
