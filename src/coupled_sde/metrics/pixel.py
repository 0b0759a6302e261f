"""Pixel distances between a source image and its edit.

``l1_255`` is the L1 of the paper's protocol (Zhang & Scott's protocol; docs/guides/dataset-runs.md): mean absolute pixel difference on
the 0-255 scale. ``l2`` is the mean squared error on the ``[0, 1]`` scale, the "MSE" that
editing benchmarks such as PIE-Bench report (usually multiplied by 10^4).

Both take images in ``[-1, 1]`` and clamp them to that range first, as writing them to an image
file would; ``quantize=True`` also rounds to the 256 levels of an 8-bit file, to reproduce numbers
computed from saved PNGs.
"""

from __future__ import annotations

import torch

from coupled_sde.metrics._image import check_pair

__all__ = ["l1_255", "l2"]


def _to_255(images: torch.Tensor, quantize: bool) -> torch.Tensor:
    """``[-1, 1]`` -> ``[0, 255]`` in float32 (clamped; rounded to integers when ``quantize``)."""
    x = (images.float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return x.round() if quantize else x


def l1_255(a: torch.Tensor, b: torch.Tensor, quantize: bool = False) -> torch.Tensor:
    """Mean absolute difference on the 0..255 scale, per image: ``(B,)`` float32.

    Args:
        a, b: ``(B, 3, H, W)`` float RGB in ``[-1, 1]``, same shape.
        quantize: round both to 8-bit levels first (as if saved as PNG and read back).
    """
    check_pair(a, b)
    return (_to_255(a, quantize) - _to_255(b, quantize)).abs().mean(dim=(1, 2, 3))


def l2(a: torch.Tensor, b: torch.Tensor, quantize: bool = False) -> torch.Tensor:
    """Mean squared difference on the ``[0, 1]`` scale, per image: ``(B,)`` float32.

    Args:
        a, b: ``(B, 3, H, W)`` float RGB in ``[-1, 1]``, same shape.
        quantize: round both to 8-bit levels first (as if saved as PNG and read back).
    """
    check_pair(a, b)
    return ((_to_255(a, quantize) - _to_255(b, quantize)) / 255.0).pow(2).mean(dim=(1, 2, 3))
