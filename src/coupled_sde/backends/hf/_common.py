"""Helpers shared by the diffusers backbones: devices, prompts, image sizes and the VAE.

Nothing here imports diffusers at module level; the one diffusers utility used (``randn_tensor``)
is imported where it is needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import torch

Generators = torch.Generator | list[torch.Generator] | None


def execution_device(pipe: Any, module: torch.nn.Module | None = None) -> torch.device:
    """The device a pipeline component's *inputs* must be on.

    With ``enable_model_cpu_offload`` / sequential or group offloading the weights sit on the CPU
    (or the meta device) and a hook moves them to the accelerator at call time, so the weights'
    device is the wrong answer. diffusers >= 0.42 exposes ``get_module_execution_device`` for one
    module; older versions only have the pipeline-wide ``pipe._execution_device``, which we fall
    back on.
    """
    if module is not None:
        try:
            from diffusers.utils.torch_utils import get_module_execution_device
        except ImportError:  # diffusers < 0.42
            pass
        else:
            return get_module_execution_device(module)
    return torch.device(pipe._execution_device)


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The ``from_pretrained`` keyword for a dtype: ``dtype`` on diffusers versions that renamed it, else ``torch_dtype``.

    diffusers 0.42 deprecates ``torch_dtype`` (a ``FutureWarning``) in favour of ``dtype``; older
    versions only know ``torch_dtype``. The rename came with ``deprecation_utils._resolve_dtype``.
    """
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def prompt_text(prompt: str | int | None) -> str:
    """A text prompt as a string; ``None`` (the null prompt) is the empty string, as in diffusers."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    raise TypeError(f"text-to-image backbones take text prompts (str or None), got {type(prompt).__name__}: {prompt!r}")


def dedupe(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Unique texts in first-seen order, and each text's row in that list.

    Encoding each distinct prompt once (a source and target that share a negative prompt, or many
    members with the same prompt) keeps ``encode_conditions`` to one text-encoder batch per edit.
    """
    unique = list(dict.fromkeys(texts))
    return unique, {text: row for row, text in enumerate(unique)}


def check_image_size(height: int, width: int, multiple: int, why: str) -> None:
    """:func:`coupled_sde.io.check_size` for a backbone: diffusers pipelines silently *resize* such
    inputs (and the FlowEdit reference code broke when diffusers changed ``vae_scale_factor``); a
    backbone that edits a given image must not, so it refuses and names the nearest valid size."""
    from coupled_sde.io import check_size

    check_size(height, width, multiple, why, advice="resize or crop the image to it")


def batch_generators(generator: Generators, batch: int) -> Generators:
    """Check a per-image generator list against the batch size (a single generator or ``None`` passes)."""
    if isinstance(generator, Sequence) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch} images; pass one per image")
    return list(generator) if isinstance(generator, Sequence) else generator


@contextmanager
def vae_precision(vae: torch.nn.Module):
    """Run a float16 VAE in float32 when its config asks for it (``force_upcast``), as diffusers does.

    SD's and FLUX's VAEs overflow in float16 and return NaNs; bfloat16 and float32 run as they are.
    The VAE is cast back to float16 afterwards.
    """
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(torch.float16)


def vae_encode(
    vae: torch.nn.Module,
    images: torch.Tensor,
    generator: Generators,
    device: torch.device,
    scaling_factor: float,
    shift_factor: float,
) -> torch.Tensor:
    """Sample a latent from the VAE posterior and normalise it: ``(z - shift_factor) * scaling_factor``.

    The posterior sample ``mean + std * noise`` is formed in float32 whatever the VAE dtype. The
    noise is drawn like diffusers' ``DiagonalGaussianDistribution.sample`` (``randn_tensor``), so
    for a float32 VAE the result equals ``vae.encode(x).latent_dist.sample(generator)``
    normalised; a list of generators draws image ``b``'s noise from ``generator[b]`` alone (per-
    sample seeds: the same seed gives the same latent whatever else is in the batch).
    """
    from diffusers.utils.torch_utils import randn_tensor

    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    generator = batch_generators(generator, images.shape[0])
    with vae_precision(vae):
        dist = vae.encode(images.to(device=device, dtype=vae.dtype)).latent_dist
        mean, std = dist.mean.float(), dist.std.float()
    noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    latents = mean + std * noise
    return (latents - shift_factor) * scaling_factor


def vae_decode(
    vae: torch.nn.Module, latents: torch.Tensor, device: torch.device, scaling_factor: float, shift_factor: float
) -> torch.Tensor:
    """Undo the normalisation (``z = x / scaling_factor + shift_factor``), decode, clamp to [-1, 1], float32."""
    z = latents.float() / scaling_factor + shift_factor
    with vae_precision(vae):
        images = vae.decode(z.to(device=device, dtype=vae.dtype), return_dict=False)[0]
    return images.float().clamp(-1.0, 1.0)


def warn(message: str, stacklevel: int = 3) -> None:
    """A ``UserWarning`` attributed to the caller of the public backbone method (``stacklevel`` frames up)."""
    warnings.warn(message, UserWarning, stacklevel=stacklevel)
