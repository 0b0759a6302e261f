"""CLIP score: text-image agreement of an edit with its target prompt.

``100 * cos(image_embedding, text_embedding)`` with CLIP (Radford et al. 2021, "Learning
Transferable Visual Models From Natural Language Supervision"), the edit-fidelity axis of the
paper's CLIP-vs-LPIPS plots (Zhang & Scott's protocol; docs/guides/dataset-runs.md): CLIP ViT-L/14@336 (``openai/clip-vit-large-patch14-336``),
prompts truncated to CLIP's 77-token context. The score is not clamped at 0 (torchmetrics'
``CLIPScore`` clamps; for real images and prompts the cosine is positive anyway).

transformers is imported lazily; constructing a :class:`ClipScore` without it raises an
``ImportError`` naming ``pip install "coupled-sde[metrics]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from coupled_sde._optional import require
from coupled_sde.metrics._image import as_unit_range, center_crop, check_images, normalize, resize_shortest_side
from coupled_sde.metrics._tiny import CLIP_CONTEXT_LENGTH, clip_image_processor_class, tiny_clip_tokenizer

__all__ = ["ClipScore", "DEFAULT_CLIP_MODEL"]

#: The CLIP checkpoint of the paper's protocol (Zhang & Scott's protocol; docs/guides/dataset-runs.md).
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14-336"

#: OpenAI CLIP's image normalisation (``OPENAI_CLIP_MEAN`` / ``OPENAI_CLIP_STD`` in transformers).
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: PIL resampling codes that the torch preprocessing reproduces.
_RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}


def _size_field(size: Any, key: str) -> int | None:
    """Read ``key`` from an image processor size (a dict in transformers 4, a ``SizeDict`` in 5, or an int)."""
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` return the projected embedding (transformers 4) or an output whose
    ``pooler_output`` holds it (transformers 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScore:
    """``100 * cos(CLIP image embedding, CLIP text embedding)``, per image.

    Image preprocessing is done in torch, reproducing ``CLIPImageProcessor``: shorter side
    resized to 336 (bicubic), centre crop 336x336, CLIP mean/std. We do not call the image
    processor because it goes through PIL/uint8 per image: it would quantise the edits to 8 bits,
    run on the CPU one image at a time and need a float->uint8 round trip. The torch version uses
    PyTorch's anti-aliased bicubic resize, a port of Pillow's (see ``_image.py``), so it agrees
    with the processor up to Pillow's 8-bit rounding (checked in the tests); it is also what the
    transformers "torchvision backend" CLIP processor computes.

    Args:
        model: a ``transformers.CLIPModel`` (eval mode is set; weights are not touched).
        tokenizer: its tokenizer (``CLIPTokenizer`` / ``CLIPTokenizerFast``).
        image_processor: its ``CLIPImageProcessor``, read only for ``size``, ``crop_size``,
            ``resample``, ``image_mean``, ``image_std``; ``None`` uses CLIP's defaults at the
            model's ``vision_config.image_size``.
        max_length: prompt length limit in tokens (start and end tokens included); at most CLIP's
            77. Longer prompts are truncated (the end token is kept).
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer: Any, image_processor: Any = None, max_length: int = CLIP_CONTEXT_LENGTH
    ) -> None:
        require("transformers", "metrics")
        self.model = model.eval()
        self.tokenizer = tokenizer
        vision_size = int(model.config.vision_config.image_size)
        if image_processor is None:
            self.resize_size, self.crop_size = vision_size, (vision_size, vision_size)
            self.resize_mode, self.mean, self.std = "bicubic", _CLIP_MEAN, _CLIP_STD
        else:
            self.resize_size = int(_size_field(image_processor.size, "shortest_edge") or vision_size)
            crop = image_processor.crop_size
            self.crop_size = (int(_size_field(crop, "height")), int(_size_field(crop, "width")))
            self.resize_mode = _RESAMPLE_MODES.get(int(image_processor.resample), "bicubic")
            self.mean, self.std = tuple(image_processor.image_mean), tuple(image_processor.image_std)
        if self.crop_size != (vision_size, vision_size):
            raise ValueError(
                f"the image processor crops to {self.crop_size} but the CLIP vision model expects {vision_size}x{vision_size}"
            )
        limits = [max_length, model.config.text_config.max_position_embeddings]
        if getattr(tokenizer, "model_max_length", None) and tokenizer.model_max_length < 10**6:
            limits.append(tokenizer.model_max_length)
        self.max_length = int(min(limits))

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str = DEFAULT_CLIP_MODEL,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> ClipScore:
        """Load model, tokenizer and image-processor config from the Hub id or a local folder.

        The weights are loaded in float32 and then moved/cast (``dtype=torch.float16`` halves the
        memory of ViT-L/14 on a GPU; scores change in the second decimal).
        """
        require("transformers", "metrics")
        from transformers import AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(model_id_or_path)
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_id_or_path)
        image_processor = clip_image_processor_class().from_pretrained(model_id_or_path)
        return cls(model, tokenizer, image_processor)

    @classmethod
    def tiny(cls, seed: int = 0) -> ClipScore:
        """A tiny random-weight CLIP (width 32, one layer per tower, 336-pixel input) with a local tokenizer, offline."""
        require("transformers", "metrics")
        from transformers import CLIPConfig, CLIPModel

        tokenizer = tiny_clip_tokenizer()
        text = dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
            max_position_embeddings=CLIP_CONTEXT_LENGTH, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        vision = dict(
            image_size=336, patch_size=14, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4
        )
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        processor = clip_image_processor_class()(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        return cls(model, tokenizer, processor)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` for the vision tower from images in ``[-1, 1]`` (computed in float32 on the model's device).

        After resizing, values are clamped to ``[0, 1]`` as the processor's uint8 output would be
        (bicubic overshoots at edges).
        """
        check_images(images)
        x = as_unit_range(images.to(device=self.device, dtype=torch.float32))
        x = resize_shortest_side(x, self.resize_size, self.resize_mode).clamp(0.0, 1.0)
        x = center_crop(x, self.crop_size, offset="floor")
        return normalize(x, self.mean, self.std).to(self.dtype)

    def tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded to the longest prompt and truncated to ``max_length``."""
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": tokens["input_ids"].to(self.device), "attention_mask": tokens["attention_mask"].to(self.device)}

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Projected CLIP image embeddings ``(B, projection_dim)`` (not normalised)."""
        return _pooled(self.model.get_image_features(pixel_values=self.preprocess(images)))

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """Projected CLIP text embeddings ``(B, projection_dim)`` (not normalised)."""
        return _pooled(self.model.get_text_features(**self.tokenize(prompts)))

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP score of each image with its prompt.

        Args:
            images: ``(B, 3, H, W)`` float RGB in ``[-1, 1]``, any size (resized/cropped here).
            prompts: ``B`` strings, one per image (for edits: the *target* prompts).

        Returns:
            ``(B,)`` float32 on ``images``' device: ``100 * cos``, in ``[-100, 100]``.
        """
        if isinstance(prompts, str) or len(prompts) != images.shape[0]:
            count = "a bare string" if isinstance(prompts, str) else f"{len(prompts)} prompts"
            raise ValueError(f"need one prompt per image: {images.shape[0]} images, {count}")
        image_embeds = self.image_features(images).float()
        text_embeds = self.text_features(prompts).float()
        return (100.0 * F.cosine_similarity(image_embeds, text_embeds, dim=-1)).to(images.device)
