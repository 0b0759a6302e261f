"""The scene model's networks: a conditional rectified-flow U-Net and the attribute classifier.

Conventions (shared with the training script ``scripts/train_scenes.py`` and the backbone):

* images ``(N, 3, 32, 32)`` float32 in [-1, 1] (see :mod:`coupled_sde.backends.scenes.data`);
* rectified flow as in diffusers: ``x_sigma = (1 - sigma) x0 + sigma eps``, ``u = net(x, sigma, labels)``
  estimates ``eps - x0``;
* ``labels`` ``(N, 3)`` long: shape, colour, texture; each attribute has its own *null* index (its
  number of values) and all three null is the unconditional model of classifier-free guidance,
  ``u = u_null + w (u_cond - u_null)``.

The U-Net works on a 2x2 space-to-depth view (16x16x12) with one 8x8 level, FiLM-conditioned on
``MLP(sinusoidal(sigma)) + E_shape + E_colour + E_texture``: small enough to train on two CPU cores
in minutes, large enough to draw textures it has seen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._weights import load_network
from ..digits.network import _FiLMResBlock, sinusoidal_embedding
from .data import COLOURS, SHAPES, TEXTURES

__all__ = [
    "ATTRIBUTES",
    "N_VALUES",
    "NULL_LABELS",
    "SceneFlowNet",
    "SceneClassifier",
    "load_scene_flow",
    "load_scene_classifier",
]

#: The three conditioning attributes, and how many values each takes.
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "texture")
N_VALUES: tuple[int, ...] = (len(SHAPES), len(COLOURS), len(TEXTURES))
#: Labels of the unconditional model: each attribute's null index.
NULL_LABELS: tuple[int, ...] = N_VALUES

_PACKAGE = "coupled_sde.backends.scenes"


class SceneFlowNet(nn.Module):
    """Conditional velocity network on 32x32 RGB scenes (``u = eps - x0``)."""

    def __init__(self, channels: int = 64, channels_low: int = 128, blocks_low: int = 2, emb_dim: int = 128) -> None:
        super().__init__()
        self.config: dict[str, int] = {
            "channels": channels,
            "channels_low": channels_low,
            "blocks_low": blocks_low,
            "emb_dim": emb_dim,
        }
        self.emb_dim = emb_dim
        self.sigma_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.ModuleList([nn.Embedding(k + 1, emb_dim) for k in N_VALUES])
        c, cl = channels, channels_low
        self.conv_in = nn.Conv2d(12, c, 3, padding=1)
        self.block_in = _FiLMResBlock(c, emb_dim)
        self.down = nn.Conv2d(c, cl, 3, stride=2, padding=1)
        self.low = nn.ModuleList([_FiLMResBlock(cl, emb_dim) for _ in range(blocks_low)])
        self.up = nn.ConvTranspose2d(cl, c, 2, stride=2)
        self.merge = nn.Conv2d(2 * c, c, 1)
        self.block_out = _FiLMResBlock(c, emb_dim)
        self.norm_out = nn.GroupNorm(8, c)
        self.conv_out = nn.Conv2d(c, 12, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        """``x`` ``(N, 3, 32, 32)``, ``sigma`` ``(N,)`` or scalar, ``labels`` ``(N, 3)`` -> ``(N, 3, 32, 32)``."""
        n = x.shape[0]
        sigma = sigma.to(device=x.device, dtype=torch.float32).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(n)
        emb = self.sigma_mlp(sinusoidal_embedding(sigma, self.emb_dim))
        for k, table in enumerate(self.label_emb):
            emb = emb + table(labels[:, k])
        emb = F.silu(emb)
        h0 = self.block_in(self.conv_in(F.pixel_unshuffle(x, 2)), emb)
        h = self.down(h0)
        for block in self.low:
            h = block(h, emb)
        h = self.merge(torch.cat([self.up(h), h0], 1))
        h = self.block_out(h, emb)
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), 2)


class SceneClassifier(nn.Module):
    """One CNN trunk with three heads (shape, colour, texture) for 32x32 scenes in [-1, 1].

    :meth:`features` gives the pooled feature vector (the space of the Fréchet distance) and
    :meth:`feature_maps` the per-stage maps (the LPIPS-style distance).
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.config: dict[str, int] = {"width": width}
        w = width

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            )

        self.stages = nn.ModuleList([stage(3, w), stage(w, 2 * w), stage(2 * w, 4 * w)])
        self.heads = nn.ModuleList([nn.Linear(4 * w, k) for k in N_VALUES])
        self.dropout = nn.Dropout(0.2)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """Stage outputs at 32x32, 16x16 and 8x8."""
        maps = []
        h = x
        for i, s in enumerate(self.stages):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = s(h)
            maps.append(h)
        return maps

    def features(self, x: Tensor) -> Tensor:
        """Pooled features ``(N, 4 * width)``."""
        return self.feature_maps(x)[-1].mean((2, 3))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits for shape, colour and texture: a list of three ``(N, k)`` tensors."""
        f = self.dropout(self.features(x))
        return [head(f) for head in self.heads]


def load_scene_flow(device: str | torch.device = "cpu") -> SceneFlowNet:
    """The shipped flow network (EMA weights), float32, eval mode."""
    return load_network(SceneFlowNet, _PACKAGE, "flow.pt", device)


def load_scene_classifier(device: str | torch.device = "cpu") -> SceneClassifier:
    """The shipped attribute classifier (trained on real scenes only), float32, eval mode."""
    return load_network(SceneClassifier, _PACKAGE, "classifier.pt", device)
