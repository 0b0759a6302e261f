"""Test images for the metrics tests (imported by name, like ``tests/diffusers/reference_flux_sync_sde.py``)."""

from __future__ import annotations

import numpy as np
import torch


def smooth_images(batch: int = 2, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, distinct RGB images in [-1, 1] (a little seeded noise on top of sinusoids)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.linspace(-1.0, 1.0, height)[:, None]
    x = torch.linspace(-1.0, 1.0, width)[None, :]
    images = []
    for i in range(batch):
        k = 1.0 + i
        image = torch.stack([torch.sin(3 * k * x + y), torch.cos(2 * k * y - x), torch.sin(k * x * y * 4)]).expand(
            3, height, width
        )
        images.append(0.8 * image + 0.1 * torch.randn(3, height, width, generator=gen))
    return torch.stack(images).clamp(-1.0, 1.0)


def textured_uint8(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 test image: sinusoids plus noise (sharp enough to exercise anti-aliasing)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / 50.0
    image = np.stack([np.sin(xx) * 0.5 + 0.5, np.cos(yy * 1.3) * 0.5 + 0.5, np.sin(xx * yy / 3) * 0.5 + 0.5], -1)
    return (image * 255 + rng.normal(0, 10, image.shape)).clip(0, 255).astype(np.uint8)


def uint8_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
