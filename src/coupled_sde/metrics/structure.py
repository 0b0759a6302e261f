"""Structure distance: how far an edit moved the source's layout, by DINO ViT self-similarity.

Tumanyan, Bar-Tal, Bagon, Dekel 2022 ("Splicing ViT Features for Semantic Appearance Transfer"),
as PIE-Bench (Ju et al. 2024, "PnP Inversion", ``evaluation/matrics_calculator.py``) uses it: the
*keys* of the last transformer block of DINO ViT-B/8 for all tokens (CLS included, heads
concatenated), their cosine self-similarity matrix ``S`` (``tokens x tokens``), and the mean squared
difference of the two images' matrices. PIE-Bench reports it x10^3.

Preprocessing follows that script exactly, including its one surprise: the images enter as float
pixel values on the **0-255** scale (it never divides by 255), are resized so that the shorter side
is 224 (longer side at most 480, bilinear) and then "normalised" with ImageNet's mean and std. We
keep that, so numbers are comparable with published PIE-Bench tables; ``pixel_scale=1`` gives the
conventional ``[0, 1]`` input instead.

The keys are read with a forward hook on the key projection of the last layer of a
``transformers.ViTModel`` (``k_proj`` in transformers 5, ``attention.attention.key`` in 4): the
same tensor as the fused ``qkv`` output's key part in the DINO repository, heads in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from coupled_sde._optional import require
from coupled_sde.metrics._image import IMAGENET_MEAN, IMAGENET_STD, as_unit_range, check_pair, normalize

__all__ = ["DEFAULT_STRUCTURE_MODEL", "StructureDistance", "cosine_self_similarity"]

#: PIE-Bench's DINO checkpoint (``dino_vitb8``), as converted to transformers.
DEFAULT_STRUCTURE_MODEL = "facebook/dino-vitb8"


def cosine_self_similarity(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, T, T)`` cosine similarities, norms' product clamped at ``eps`` (as the script)."""
    norm = x.norm(dim=2, keepdim=True)
    return (x @ x.transpose(1, 2)) / torch.clamp(norm @ norm.transpose(1, 2), min=eps)


def _key_projection(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    blocks = getattr(model, "layers", None)
    if blocks is None:  # transformers 4
        blocks = model.encoder.layer
    attention = blocks[layer].attention
    for path in ("k_proj", "attention.key", "key"):
        module = attention
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    raise TypeError(f"cannot find the key projection of layer {layer} of {type(model).__name__}")


class StructureDistance:
    """``mean((S(a) - S(b))^2)`` per image pair, ``S`` the keys' self-similarity of the last (``layer``) block.

    Args:
        model: a ``transformers.ViTModel`` (DINO ViT-B/8 for PIE-Bench).
        size: shorter side after resizing (224); ``max_size`` caps the longer side (480).
        pixel_scale: the scale the pixels are given on before normalisation (255, as the script).
        layer: the block whose keys are compared (-1: the last, the script's 11 of 12).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        size: int = 224,
        max_size: int = 480,
        pixel_scale: float = 255.0,
        layer: int = -1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        require("transformers", "metrics")
        self.model = model.eval()
        self.size, self.max_size, self.pixel_scale, self.layer = int(size), int(max_size), float(pixel_scale), int(layer)
        self.mean, self.std = tuple(mean), tuple(std)
        self._key = _key_projection(model, layer)

    @classmethod
    def from_pretrained(
        cls, model_id_or_path: str = DEFAULT_STRUCTURE_MODEL, device: torch.device | str | None = None, **kwargs
    ) -> StructureDistance:
        """Load a DINO ViT (without pooler) from the Hub id or a local folder."""
        require("transformers", "metrics")
        from transformers import ViTModel

        model = ViTModel.from_pretrained(model_id_or_path, add_pooling_layer=False)
        return cls(model.to(device) if device is not None else model, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0) -> StructureDistance:
        """A tiny random-weight ViT (224 input, patch 16, width 32, two layers), offline."""
        from coupled_sde.metrics._tiny import tiny_vit

        return cls(tiny_vit(seed))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """torchvision's ``Resize(size, max_size=...)``: shorter side ``size``, longer side truncated, capped."""
        short, long = min(height, width), max(height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        if new_long > self.max_size:
            new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``pixel_values``: ``[-1, 1]`` -> ``[0, pixel_scale]`` -> resize -> ImageNet mean/std."""
        x = as_unit_range(images.to(device=self.device, dtype=torch.float32)) * self.pixel_scale
        size = self.resized_size(*x.shape[-2:])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return normalize(x, self.mean, self.std)

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """The last block's keys ``(B, tokens, hidden)`` (heads concatenated)."""
        captured: list[torch.Tensor] = []
        handle = self._key.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            self.model(pixel_values=self.preprocess(images), interpolate_pos_encoding=True)
        finally:
            handle.remove()
        return captured[0].float()

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Structure distance per pair, ``(B,)`` float32 on ``a``'s device (0 for identical images).

        Args:
            a, b: ``(B, 3, H, W)`` float RGB in ``[-1, 1]``, same shape.
        """
        check_pair(a, b)
        sa = cosine_self_similarity(self.keys(a))
        sb = cosine_self_similarity(self.keys(b))
        return (sa - sb).pow(2).mean(dim=(1, 2)).to(a.device)
