"""The facade: one entry point for every registered method, on latents, on image tensors, on image files.

* :func:`edit_latents` ``(backbone, latents, method, source, target, **options)`` calls the method;
* :func:`edit_images` adds the backbone's VAE (``encode_images`` / ``decode_latents``), sampling the
  VAE posterior with per-sample generators derived from the seed, so the same seed gives the same
  image whatever the batch;
* :func:`edit_tensor` takes settings in the settings vocabulary (``steps``, ``start``, ``guidance``, ...,
  see :mod:`coupled_sde.editing.registry`) over the method's and the backbone's defaults;
* :func:`load_inputs` is the load -> resize -> mask sequence (the CLI, dataset runs and
  :func:`edit_image` use it), :func:`edit_image` the whole thing for one file: model, image, prompts.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..backends.base import Condition
from .common import EditResult, Seeds, derive_seeds
from .loading import (
    as_backbone,
    backbone_multiple,
    default_device,
    execution_device,
    load_backbone,
    model_backbone,
    model_family,
    parse_dtype,
    size_multiple,
)
from .registry import get_method, method_names, resolve_settings, split_settings, validate_settings

__all__ = [
    "as_backbone",
    "backbone_multiple",
    "default_device",
    "edit_image",
    "edit_images",
    "edit_latents",
    "edit_tensor",
    "execution_device",
    "load_backbone",
    "load_inputs",
    "model_backbone",
    "model_family",
    "parse_dtype",
    "resize_for",
    "resolve_settings",
    "size_multiple",
    "validate_settings",
]


def edit_latents(
    backbone: Any,
    latents: torch.Tensor,
    method: str,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    **options: Any,
) -> EditResult:
    """Edit latents ``(B, *latent)`` with a registered ``method`` (its keyword arguments in ``options``;
    ``seed=`` is accepted for ``noise=``)."""
    return get_method(method).function(backbone, latents, source, target, **options)


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
    **options: Any,
) -> EditResult:
    """Edit images ``(B, C, H, W)`` in [-1, 1]: encode (VAE posterior drawn from ``seed``), edit, decode.

    ``noise`` defaults to ``seed``. ``EditResult.images`` holds the decoded edits.
    """
    if not hasattr(backbone, "encode_images"):
        raise TypeError(f"{type(backbone).__name__} does not map images to latents; use edit_latents")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor (B, C, H, W) in [-1, 1], got {getattr(images, 'shape', type(images).__name__)}")
    latents = backbone.encode_images(images, _generators(seed, images.shape[0]))
    options.setdefault("noise", seed)
    result = edit_latents(backbone, latents, method, source, target, **options)
    result.images = backbone.decode_latents(result.latents)
    return result


def edit_tensor(
    backbone: Any,
    image: torch.Tensor,
    source_prompt: str | None,
    target_prompt: str | None,
    method: str = "sync-sde",
    *,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    progress: bool = False,
    **settings: Any,
) -> EditResult:
    """Edit one image ``(1, 3, H, W)`` in [-1, 1] with ``settings`` in the settings vocabulary.

    ``mask`` ``(1, 1, H, W)`` at the image size (1 = editable) is averaged down to the latent grid.
    The result's ``settings`` are the resolved settings plus the method's own report.
    """
    from ..io import load_mask

    resolved = resolve_settings(backbone, method, settings)
    source, target, kwargs = split_settings(method, resolved, source_prompt, target_prompt)
    height, width = int(image.shape[-2]), int(image.shape[-1])
    if callable(getattr(backbone, "latent_shape", None)):
        _, h, w = backbone.latent_shape(height, width)  # ValueError naming the nearest valid size
    else:  # backbones whose images are their latents (the shipped digits and scene models)
        h, w = height, width
    if mask is not None:
        kwargs["mask"] = load_mask(mask, (h, w), source_size=(height, width), threshold=None)
    result = edit_images(backbone, image, method, source, target, seed=_one_seed(seed, image), progress=progress, **kwargs)
    result.settings = {**resolved, **{k: v for k, v in result.settings.items() if k not in resolved}}
    return result


def resize_for(backbone: Any, image: torch.Tensor) -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` images to the nearest sides the backbone accepts."""
    from ..io import resize_to_multiple

    return resize_to_multiple(image, backbone_multiple(backbone))


def load_inputs(image: Any, mask: Any = None, multiple: int = 1, resize: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An image (path, PIL or tensor) as ``(1, 3, H, W)`` in [-1, 1], resized to ``multiple`` if asked
    (else a ``ValueError`` naming the nearest valid size), and its mask at that size (white = editable)."""
    from ..io import check_size, load_image, load_mask, resize_to_multiple

    x = load_image(image)
    original = (int(x.shape[-2]), int(x.shape[-1]))
    if resize:
        x = resize_to_multiple(x, multiple)
    elif multiple > 1:
        check_size(*original, multiple)
    m = None if mask is None else load_mask(mask, tuple(x.shape[-2:]), source_size=original, threshold=None)
    return x, m


def edit_image(
    model: Any,
    image: Any,
    source_prompt: str | None,
    target_prompt: str | None,
    method: str = "sync-sde",
    *,
    seed: int = 0,
    mask: Any = None,
    resize: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = False,
    **settings: Any,
):
    """Edit an image from ``source_prompt`` to ``target_prompt`` in one call; returns a PIL image.

    Args:
        model: a hub id or local folder (loaded with :func:`load_backbone` on ``device`` in
            ``dtype``), a supported diffusers pipeline, or a backbone. Pass a pipeline or backbone
            to edit many images without reloading.
        image: a path, PIL image or tensor (see :func:`coupled_sde.io.load_image`).
        method: a registered method (``"sync-sde"``, ``"flowedit"``, ``"sdedit"``, ``"ode-inversion"``, ...).
        seed: the same seed gives the same image.
        mask: optional mask at the image size, white = editable (not for SDEdit).
        resize: resize the image (and mask) to the nearest size the model takes, instead of an error.
        settings: ``steps``, ``start``, ``guidance``, ... (:mod:`coupled_sde.editing.registry`).

    The returned image's ``info["coupled_sde"]`` holds the method, resolved settings, seed, model
    calls and seconds.
    """
    from ..io import to_pil

    validate_settings(method, settings)  # before a model load
    if device is not None:
        from ..commands._runtime import check_device

        check_device(str(device), option="device=")  # before a model load
    backbone = as_backbone(model, device=device, dtype=dtype)
    if device is not None and not isinstance(model, (str, os.PathLike)):
        backbone = _moved(backbone, device)  # a pipeline or backbone passed in goes where it is asked to
    x, m = load_inputs(image, mask, backbone_multiple(backbone), resize)
    result = edit_tensor(
        backbone, x.to(execution_device(backbone)), source_prompt, target_prompt, method, seed=seed, mask=m,
        progress=progress, **settings,
    )  # fmt: skip
    pil = to_pil(result.images)
    pil.info["coupled_sde"] = {"method": method, "settings": result.settings, "seed": seed, "model_calls": result.model_calls,
                               "model_evaluations": result.model_evaluations, "seconds": result.seconds}  # fmt: skip
    return pil


def _one_seed(seed: Any, image: torch.Tensor) -> Any:
    """The seed of a one-image edit: an integer (numpy and 0-d tensor integers too), or a one-element list."""
    if isinstance(seed, torch.Tensor) and seed.dim() == 0:
        seed = seed.item()
    if isinstance(seed, (list, tuple)) or (isinstance(seed, torch.Tensor) and seed.dim() == 1):
        seeds = [int(s) for s in seed]
        if len(seeds) != image.shape[0]:
            raise ValueError(
                f"{len(seeds)} seeds for {image.shape[0]} image(s): give one seed per image (here: seed={seeds[0]} or [{seeds[0]}])"
            )
        return seeds
    try:
        return int(seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be an integer (or one per image), got {seed!r}") from None


def _moved(backbone: Any, device: Any) -> Any:
    """``backbone`` with its pipeline or network moved to ``device`` (in place)."""
    pipe = getattr(backbone, "pipe", None)
    if pipe is not None:
        pipe.to(device)
    elif isinstance(getattr(backbone, "network", None), torch.nn.Module):
        backbone.network.to(device)
        backbone.device = next(backbone.network.parameters()).device
    return backbone


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # the registered method functions by name
        return {n: get_method(n).function for n in method_names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
