"""Measures of an edit on the scene model: fidelity, preservation outside the edited region, realism.

All images are ``(N, 3, H, W)`` in [-1, 1]; ``keep`` masks are ``(N, 1, H, W)`` with 1 where the
pixel must survive the edit.

* :func:`masked_psnr` and :func:`masked_ssim`: PSNR (dB, images on [0, 1]) and SSIM (Wang et al.
  2004, Gaussian window 7x7, sigma 1.5) averaged over the kept pixels only.
* :func:`masked_feature_distance`: an LPIPS-style distance (Zhang et al. 2018, without the learned
  channel weights) in the feature maps of the scene classifier: channel vectors normalised to unit
  length, squared distance per position, averaged over positions and stages. With a keep mask both
  images are first masked alike (the pixels not kept set to 0, mid-gray), as PIE-Bench's background
  LPIPS does, so whatever happens outside the kept pixels cannot change the distance.
* :func:`frechet_distance`: the Fréchet distance between Gaussians fitted to two feature sets
  (the FID formula of Heusel et al. 2017, here in the classifier's pooled feature space).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_psnr", "masked_ssim", "masked_feature_distance", "frechet_distance"]


def _check(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"images must be two (N, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if keep is not None and (
        keep.dim() != 4 or keep.shape[0] != a.shape[0] or keep.shape[2:] != a.shape[2:] or keep.shape[1] != 1
    ):
        raise ValueError(f"keep mask must be (N, 1, H, W) matching the images, got {tuple(keep.shape)}")


def _mean_over(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` ``(N, C, H, W)`` over kept positions (NaN where none is kept)."""
    w = keep.to(values.dtype).expand_as(values)
    return (values * w).sum((1, 2, 3)) / w.sum((1, 2, 3))


def masked_psnr(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image over the kept pixels, images mapped to [0, 1] (``(N,)``)."""
    _check(a, b, keep)
    d2 = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2)
    mse = d2.mean((1, 2, 3)) if keep is None else _mean_over(d2, keep)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def masked_ssim(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM per image over the kept pixels (``(N,)``), per channel on [0, 1], reflect padding."""
    _check(a, b, keep)
    x, y = (a.float().clamp(-1, 1) + 1) / 2, (b.float().clamp(-1, 1) + 1) / 2
    c = x.shape[1]
    win = _gaussian_window().to(x).expand(c, 1, -1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (3, 3, 3, 3), mode="reflect"), win, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean((1, 2, 3)) if keep is None else _mean_over(s, keep)


def masked_feature_distance(
    feature_maps: object, a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """LPIPS-style distance per image (``(N,)``) in the maps of ``feature_maps(x) -> list[(N, C, h, w)]``."""
    _check(a, b, keep)
    a, b = a.clamp(-1, 1), b.clamp(-1, 1)
    if keep is not None:
        k = keep.to(a.dtype)
        a, b = a * k, b * k
    with torch.no_grad():
        fa, fb = feature_maps(a), feature_maps(b)  # type: ignore[operator]
    total = torch.zeros(a.shape[0])
    for ma, mb in zip(fa, fb):
        na = ma / (ma.norm(dim=1, keepdim=True) + 1e-10)
        nb = mb / (mb.norm(dim=1, keepdim=True) + 1e-10)
        total += (na - nb).pow(2).sum(1).mean((1, 2))
    return total / len(fa)


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)`` between feature sets ``(N, D)``."""
    if f1.dim() != 2 or f2.dim() != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"need two (N >= 2, D) feature sets of one width, got {tuple(f1.shape)} and {tuple(f2.shape)}")
    a, b = f1.double(), f2.double()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    lam, vec = torch.linalg.eigh(s1)
    r1 = (vec * lam.clamp_min(0).sqrt()) @ vec.T
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * cross)
