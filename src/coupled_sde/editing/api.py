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
from .rf_inversion import rf_inversion
from .sdedit import sdedit
from .sync_sde import sync_sde
from .vp_methods import vp_ode_inversion, vp_sdedit, vp_sync_sde

__all__ = ["METHODS", "VP_METHODS", "edit_latents", "edit_images"]


def _is_vp(backbone: Any) -> bool:
    """VP diffusion backbones (Stable Diffusion 1.x/2.x) predict ``epsilon`` or ``v``; flow ones ``flow``."""
    return getattr(backbone, "prediction", None) in ("epsilon", "v")


def _sdedit(
    backbone: Any, x: torch.Tensor, source: Any, target: Any, *, seed: Seeds = 0, mask: Any = None, **kw: Any
) -> EditResult:
    if mask is not None:
        raise ValueError("masks are supported by sync-sde, flowedit and ode-inversion, not by sdedit")
    return (vp_sdedit if _is_vp(backbone) else sdedit)(backbone, x, target, seed=seed, **kw)


def _ode_inversion(backbone: Any, x: torch.Tensor, source: Any, target: Any, seed: Seeds | None = None, **kw: Any) -> EditResult:
    # deterministic: the seed is not used
    return (vp_ode_inversion if _is_vp(backbone) else ode_inversion)(backbone, x, source, target, **kw)


def _flowedit(backbone: Any, x: torch.Tensor, source: Any, target: Any, *, seed: Seeds = 0, **kw: Any) -> EditResult:
    if _is_vp(backbone):
        raise ValueError(
            f"FlowEdit is defined for rectified-flow backbones (prediction 'flow'); {type(backbone).__name__} is a VP "
            f"diffusion model (prediction {backbone.prediction!r}): use 'sync-sde', 'sdedit' or 'ode-inversion'"
        )
    return flowedit(backbone, x, source, target, seed=seed, **kw)


def _rf_inversion(backbone: Any, x: torch.Tensor, source: Any, target: Any, **kw: Any) -> EditResult:
    if _is_vp(backbone):
        raise ValueError(f"RF-Inversion is defined for rectified-flow backbones (prediction 'flow'); {type(backbone).__name__} is not")
    return rf_inversion(backbone, x, source, target, **kw)


METHODS: dict[str, Callable[..., EditResult]] = {
    "sync-sde": sync_sde,
    "flowedit": _flowedit,
    "sdedit": _sdedit,
    "ode-inversion": _ode_inversion,
    "rf-inversion": _rf_inversion,
}

#: The VP-diffusion implementations (``backbone.prediction`` in ``{"epsilon", "v"}``: Stable Diffusion
#: 1.x/2.x), same names and calling convention; :func:`edit_latents` picks this table for VP backbones.
VP_METHODS: dict[str, Callable[..., EditResult]] = {
    "sync-sde": vp_sync_sde,
    "flowedit": _flowedit,  # raises a clear error: FlowEdit is defined for flow models
    "sdedit": _sdedit,
    "ode-inversion": _ode_inversion,
    "rf-inversion": _rf_inversion,
}


def edit_latents(
    backbone: Any,
    latents: torch.Tensor,
    method: str,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    **settings: Any,
) -> EditResult:
    """Edit latents ``(B, *latent)`` with ``method`` (one of :data:`METHODS`): the rectified-flow
    implementation, or the VP one (:data:`VP_METHODS`) when ``backbone.prediction`` is ``"epsilon"``/``"v"``."""
    try:
        fn = (VP_METHODS if _is_vp(backbone) else METHODS)[method]
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
