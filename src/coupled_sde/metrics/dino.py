"""DINO distance: ``1 - cos`` between self-supervised ViT features of a source image and its edit.

DINO ViT-S/16 (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"),
``facebook/dino-vits16`` through ``transformers.ViTModel``, as in the paper's protocol (Zhang & Scott): resize 256 ->
centre crop 224 -> ImageNet mean/std, feature = the "pooled" CLS token.

"Pooled CLS" here is the CLS token of the final, layer-normalised hidden state
(``last_hidden_state[:, 0]``), which is what the DINO repository's ``VisionTransformer.forward``
returns (``self.norm(x)[:, 0]``). It is *not* transformers' ``pooler_output``: the DINO checkpoints
were converted without a pooler (``ViTModel(config, add_pooling_layer=False)``), so loading them
with the default ``add_pooling_layer=True`` would add a randomly initialised dense+tanh pooler.
We load with ``add_pooling_layer=False`` and ignore any pooler a given model has.

transformers is imported lazily; constructing a :class:`DinoDistance` without it raises an
``ImportError`` naming ``pip install "coupled-sde[metrics]"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from coupled_sde._optional import require
from coupled_sde.metrics._image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_unit_range,
    center_crop,
    check_images,
    check_pair,
    normalize,
    resize_shortest_side,
)

__all__ = ["DEFAULT_DINO_MODEL", "DinoDistance"]

#: The DINO checkpoint of the paper's protocol (Zhang & Scott's protocol; docs/guides/dataset-runs.md).
DEFAULT_DINO_MODEL = "facebook/dino-vits16"


class DinoDistance:
    """``1 - cos(DINO CLS feature of a, DINO CLS feature of b)``, per image pair.

    Preprocessing (in torch, float32) is the DINO evaluation transform: shorter side resized to
    ``resize`` (bicubic, anti-aliased, like torchvision's ``Resize(256, BICUBIC)`` on tensors),
    centre crop ``crop`` with torchvision's rounding, ImageNet mean/std.

    Args:
        model: a ``transformers.ViTModel`` whose ``config.image_size`` equals ``crop``.
        resize: shorter-side size before cropping (256).
        crop: centre-crop size (224).
        mean, std: normalisation (ImageNet's).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        resize: int = 256,
        crop: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        require("transformers", "metrics")
        if int(model.config.image_size) != crop:
            raise ValueError(f"the ViT expects {model.config.image_size}x{model.config.image_size} inputs but crop={crop}")
        if resize < crop:
            raise ValueError(f"resize ({resize}) must be at least crop ({crop})")
        self.model = model.eval()
        self.resize, self.crop = resize, crop
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str = DEFAULT_DINO_MODEL,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> DinoDistance:
        """Load a DINO ViT from the Hub id or a local folder (without pooler), then move/cast it."""
        require("transformers", "metrics")
        from transformers import ViTModel

        model = ViTModel.from_pretrained(model_id_or_path, add_pooling_layer=False)
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        return cls(model)

    @classmethod
    def tiny(cls, seed: int = 0) -> DinoDistance:
        """A tiny random-weight ViT (224 input, patch 16, width 32, two layers), offline."""
        from coupled_sde.metrics._tiny import tiny_vit

        return cls(tiny_vit(seed))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` from images in ``[-1, 1]``: resize 256 -> crop 224 -> ImageNet normalisation."""
        check_images(images)
        x = as_unit_range(images.to(device=self.device, dtype=torch.float32))
        x = resize_shortest_side(x, self.resize, "bicubic").clamp(0.0, 1.0)
        x = center_crop(x, self.crop, offset="round")
        return normalize(x, self.mean, self.std).to(self.dtype)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """CLS token of the final layer-normalised hidden state, ``(B, hidden_size)``."""
        return self.model(pixel_values=self.preprocess(images)).last_hidden_state[:, 0]

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """DINO distance per image pair.

        Args:
            a, b: ``(B, 3, H, W)`` float RGB in ``[-1, 1]``, same shape.

        Returns:
            ``(B,)`` float32 on ``a``'s device, in ``[0, 2]``; 0 for identical images.
        """
        check_pair(a, b)
        feats = self.features(torch.cat([a, b])).float()
        fa, fb = feats.chunk(2)
        return (1.0 - F.cosine_similarity(fa, fb, dim=-1)).to(a.device)
