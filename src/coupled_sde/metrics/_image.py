"""Image preprocessing for the metric networks, in torch (no PIL, no torchvision).

Every metric takes a batch ``(B, 3, H, W)`` of float images in ``[-1, 1]`` -- the library's image
convention (a VAE decoder's output range) -- and brings it into the range and size its network
was trained on with the three operations below. They are written in torch so they run on the
metric's device, batch over images, and need neither PIL nor torchvision (which has no CPU build
here).

Resizing uses ``F.interpolate(..., mode="bicubic", antialias=True)``: PyTorch's anti-aliased
bicubic path is a port of Pillow's resampling (cubic coefficient ``a = -0.5``, kernel support
widened by the downscale factor), so it agrees with ``PIL.Image.resize(..., BICUBIC)`` up to
Pillow's 8-bit rounding, and it is exactly what torchvision's ``Resize`` and the transformers
"torchvision backend" image processors do on tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "as_unit_range",
    "center_crop",
    "check_images",
    "check_pair",
    "normalize",
    "resize",
    "resize_shortest_side",
]

#: ImageNet channel statistics (torchvision / DINO evaluation transforms).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Raise a ``ValueError`` unless ``images`` is a floating ``(B, 3, H, W)`` tensor."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor of RGB images in [-1, 1], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor in [-1, 1] (convert uint8 with x / 127.5 - 1), got {images.dtype}")


def check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    """Both batches valid and of the same shape (metrics between a source and its edit)."""
    check_images(a, "first images")
    check_images(b, "second images")
    if a.shape != b.shape:
        raise ValueError(f"the two image batches must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def as_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map images from ``[-1, 1]`` to ``[0, 1]``, clamping (what saving them as 8-bit files would do)."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def resize(images: torch.Tensor, size: tuple[int, int], mode: Literal["bicubic", "bilinear"] = "bicubic") -> torch.Tensor:
    """Resize to ``size = (height, width)`` with Pillow-like anti-aliasing; a no-op at that size already."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=True)


def resize_shortest_side(images: torch.Tensor, size: int, mode: Literal["bicubic", "bilinear"] = "bicubic") -> torch.Tensor:
    """Resize so that the shorter side is ``size``, keeping the aspect ratio.

    The longer side is ``int(size * long / short)`` (truncated), as in both torchvision's
    ``Resize(int)`` and transformers' ``get_resize_output_image_size(default_to_square=False)``.
    """
    height, width = images.shape[-2:]
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    new_size = (size, new_long) if height <= width else (new_long, size)
    return resize(images, new_size, mode)


def center_crop(images: torch.Tensor, size: int | tuple[int, int], offset: Literal["floor", "round"] = "floor") -> torch.Tensor:
    """Crop the central ``size`` window (images must be at least that large).

    Args:
        offset: how an odd margin is split. ``"floor"``: ``(H - h) // 2`` as transformers' image
            processors do; ``"round"``: ``int(round((H - h) / 2))`` as torchvision's
            ``CenterCrop`` does (the DINO evaluation transform). They differ by one pixel only
            when the margin is odd.
    """
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    height, width = images.shape[-2:]
    if crop_h > height or crop_w > width:
        raise ValueError(f"cannot centre-crop {crop_h}x{crop_w} from {height}x{width} images")
    split = (lambda margin: margin // 2) if offset == "floor" else (lambda margin: int(round(margin / 2.0)))
    top, left = split(height - crop_h), split(width - crop_w)
    return images[..., top : top + crop_h, left : left + crop_w]


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` for images in ``[0, 1]``."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t
