"""One entry point for every method, on latents or on images.

``edit_latents(backbone, latents, "sync-sde", source, target, **settings)`` dispatches to the
method; ``edit_images`` adds the backbone's VAE (``encode_images`` / ``decode_latents``), sampling
the VAE posterior with per-sample generators derived from the same seeds, so the same seed gives the
same image whatever the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..backends.base import Condition
from .common import EditResult, Seeds, derive_seeds
from .flowedit import flowedit
from .ode_inversion import ode_inversion
from .sdedit import sdedit
from .sync_sde import sync_sde

__all__ = ["METHODS", "edit_latents", "edit_images"]


def _sdedit(backbone: Any, x: torch.Tensor, source: Any, target: Any, **kw: Any) -> EditResult:
    if kw.get("mask") is not None:
        raise ValueError("masks are supported by sync-sde, flowedit and ode-inversion, not by sdedit")
    kw.pop("mask", None)
    return sdedit(backbone, x, target, **kw)


METHODS: dict[str, Callable[..., EditResult]] = {
    "sync-sde": sync_sde,
    "flowedit": flowedit,
    "sdedit": _sdedit,
    "ode-inversion": ode_inversion,
}


def edit_latents(
    backbone: Any,
    latents: torch.Tensor,
    method: str,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    **settings: Any,
) -> EditResult:
    """Edit latents ``(B, *latent)`` with ``method`` (one of :data:`METHODS`)."""
    try:
        fn = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}") from None
    return fn(backbone, latents, source, target, **settings)


def _generators(seed: Seeds, batch: int) -> list[torch.Generator]:
    seeds = derive_seeds(seed if not isinstance(seed, int) else [seed * 1_000_003 + b for b in range(batch)], 7)
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def edit_images(
    backbone: Any,
    images: torch.Tensor,
    method: str,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    seed: Seeds = 0,
    **settings: Any,
) -> EditResult:
    """Edit images ``(B, C, H, W)`` in [-1, 1]: encode, edit the latents, decode.

    ``EditResult.images`` holds the decoded edits; ``EditResult.latents`` the edited latents.
    """
    if not hasattr(backbone, "encode_images"):
        raise TypeError(f"{type(backbone).__name__} does not map images to latents; use edit_latents")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(
            f"images must be a tensor (B, C, H, W) in [-1, 1], got {getattr(images, 'shape', type(images).__name__)}"
        )
    latents = backbone.encode_images(images, _generators(seed, images.shape[0]))
    result = edit_latents(backbone, latents, method, source, target, seed=seed, **settings)
    result.images = backbone.decode_latents(result.latents)
    return result
