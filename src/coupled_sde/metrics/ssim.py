"""SSIM and PSNR (Wang, Bovik, Sheikh, Simoncelli 2004, "Image Quality Assessment: From Error
Visibility to Structural Similarity"), as PIE-Bench's evaluation script computes them with
torchmetrics: images on the ``[0, 1]`` scale (``data_range = 1``), an 11x11 Gaussian window of
``sigma = 1.5``, ``K1 = 0.01``, ``K2 = 0.03``, local statistics with population (not sample)
covariances, the SSIM map averaged over the positions where the window lies inside the image and
over the channels. PSNR is ``10 log10(1 / MSE)`` over all pixels and channels of one image.

Both take images in ``[-1, 1]`` (clamped, as writing them to a file would) and return ``(B,)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coupled_sde.metrics._image import as_unit_range, check_pair

__all__ = ["gaussian_window", "psnr", "ssim"]


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised 2-D Gaussian window ``(size, size)`` (outer product of the 1-D one)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the window size must be odd and positive, got {size}")
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image pair, ``(B,)`` float32 (1 for identical images).

    Args:
        a, b: ``(B, 3, H, W)`` float RGB in ``[-1, 1]``, same shape, at least ``window`` pixels a side.
    """
    check_pair(a, b)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window}, got {tuple(a.shape[-2:])}")
    x, y = as_unit_range(a.double()), as_unit_range(b.double())
    channels = x.shape[1]
    kernel = gaussian_window(window, sigma).to(x.device).expand(channels, 1, window, window)

    def blur(z: torch.Tensor) -> torch.Tensor:  # "valid" filtering: the window inside the image
        return F.conv2d(z, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = k1**2, k2**2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.mean(dim=(1, 2, 3)).float()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB on the ``[0, 1]`` scale per image pair, ``(B,)`` (inf if equal)."""
    check_pair(a, b)
    mse = (as_unit_range(a.double()) - as_unit_range(b.double())).pow(2).mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(1.0 / mse)).float()
