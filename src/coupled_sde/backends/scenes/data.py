"""Procedural RGB scenes with known ground truth: a coloured shape over a natural texture.

A scene is ``(shape, colour, texture)`` plus nuisance parameters (object centre and size,
brightness of the colour, texture crop position and flip). Everything is rendered from those
parameters, so an edit's ground truth is known exactly: the same scene with one attribute changed
(:func:`render`), and the object's mask comes with every image (``alpha``).

* shapes (the object's "class"): circle, square, triangle, cross, drawn anti-aliased (4x
  super-sampling) at 32x32;
* colours: red, green, blue, yellow (flat, brightness jittered by +-10%);
* textures: scikit-image's natural texture photographs ``brick``, ``grass``, ``gravel`` and the
  ``moon`` surface, grayscale, downscaled to 160x160 and normalised to mean 0.5 / std 0.2. They ship
  inside this package (``weights/textures.pt``, written by ``scripts/train_scenes.py``), so no
  scikit-image is needed at run time. Training crops come from rows 0..119 of each texture, held-out
  crops from rows 120..159 (never seen in training).

Images are float32 ``(N, 3, 32, 32)`` in [-1, 1] (``x = 2 rgb - 1``); ``alpha`` is ``(N, 1, 32, 32)``
in [0, 1].
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

import torch

__all__ = [
    "SHAPES",
    "COLOURS",
    "COLOUR_RGB",
    "TEXTURES",
    "SIZE",
    "SceneParams",
    "sample_params",
    "render",
    "load_textures",
    "TRAIN_ROWS",
    "HELDOUT_ROWS",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel", "moon")
COLOUR_RGB = torch.tensor([[0.92, 0.16, 0.14], [0.12, 0.78, 0.22], [0.18, 0.32, 0.95], [0.96, 0.86, 0.12]])
SIZE = 32
TEXTURE_SIZE = 160
#: Rows of each texture that training crops may cover, and the held-out rows.
TRAIN_ROWS, HELDOUT_ROWS = (0, 120), (120, 160)
_SUPER = 4
_PACKAGE = "coupled_sde.backends.scenes"


@lru_cache(maxsize=1)
def load_textures() -> torch.Tensor:
    """The shipped texture bank: float32 ``(4, 160, 160)`` gray levels (order of :data:`TEXTURES`)."""
    data = resources.files(_PACKAGE).joinpath("weights", "textures.pt").read_bytes()
    bank = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return bank["textures"].float() / 255.0


@dataclass(frozen=True)
class SceneParams:
    """Parameters of a batch of scenes (long/float tensors of length N)."""

    shape: torch.Tensor
    colour: torch.Tensor
    texture: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    radius: torch.Tensor
    brightness: torch.Tensor
    crop_x: torch.Tensor
    crop_y: torch.Tensor
    flip: torch.Tensor

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    def with_(self, **changes: torch.Tensor) -> SceneParams:
        """The same scenes with some attributes replaced (e.g. ``shape=new_shapes``): edit ground truth."""
        return replace(self, **changes)

    def labels(self) -> torch.Tensor:
        """``(N, 3)`` long: shape, colour, texture."""
        return torch.stack([self.shape, self.colour, self.texture], 1)


def sample_params(n: int, generator: torch.Generator, split: str = "train", labels: torch.Tensor | None = None) -> SceneParams:
    """Random scenes; ``labels`` ``(n, 3)`` fixes (shape, colour, texture), otherwise uniform."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    g = generator
    if labels is None:
        labels = torch.stack([torch.randint(0, k, (n,), generator=g) for k in (len(SHAPES), len(COLOURS), len(TEXTURES))], 1)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(n, 3)
    lo, hi = TRAIN_ROWS if split == "train" else HELDOUT_ROWS
    u = torch.rand((n, 4), generator=g)
    return SceneParams(
        shape=labels[:, 0].clone(),
        colour=labels[:, 1].clone(),
        texture=labels[:, 2].clone(),
        cx=15.5 + (u[:, 0] * 2 - 1) * 3.0,
        cy=15.5 + (u[:, 1] * 2 - 1) * 3.0,
        radius=8.0 + 3.0 * u[:, 2],
        brightness=0.9 + 0.2 * u[:, 3],
        crop_x=torch.randint(0, TEXTURE_SIZE - SIZE + 1, (n,), generator=g),
        crop_y=torch.randint(lo, hi - SIZE + 1, (n,), generator=g),
        flip=torch.randint(0, 2, (n,), generator=g).bool(),
    )


def _alpha(p: SceneParams) -> torch.Tensor:
    """Anti-aliased object masks ``(N, 1, 32, 32)`` in [0, 1]."""
    s = SIZE * _SUPER
    c = (torch.arange(s, dtype=torch.float32) + 0.5) / _SUPER - 0.5
    dx = c[None, None, :] - p.cx[:, None, None]
    dy = c[None, :, None] - p.cy[:, None, None]
    r = p.radius[:, None, None]
    ax, ay = dx.abs(), dy.abs()
    inside = torch.stack(
        [
            dx * dx + dy * dy <= r * r,
            torch.maximum(ax, ay) <= 0.82 * r,
            (dy >= -r) & (dy <= 0.75 * r) & (ax <= (dy + r) * 0.62),
            ((ax <= 0.34 * r) & (ay <= r)) | ((ay <= 0.34 * r) & (ax <= r)),
        ]
    )  # (4, N, s, s)
    m = inside[p.shape, torch.arange(len(p))].float()
    return torch.nn.functional.avg_pool2d(m[:, None], _SUPER)


def _background(p: SceneParams) -> torch.Tensor:
    bank = load_textures()
    out = torch.empty(len(p), SIZE, SIZE)
    for i in range(len(p)):
        y, x = int(p.crop_y[i]), int(p.crop_x[i])
        crop = bank[int(p.texture[i]), y : y + SIZE, x : x + SIZE]
        out[i] = crop.flip(-1) if bool(p.flip[i]) else crop
    return out[:, None].expand(-1, 3, -1, -1)


def render(p: SceneParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 3, 32, 32)`` in [-1, 1] and object masks ``alpha`` ``(N, 1, 32, 32)``."""
    alpha = _alpha(p)
    rgb = (COLOUR_RGB[p.colour] * p.brightness[:, None]).clamp(0, 1)[:, :, None, None]
    img = alpha * rgb + (1 - alpha) * _background(p)
    return img * 2 - 1, alpha
