"""Tiny, offline stand-ins for the metric networks' checkpoints (random weights, local tokenizer).

Used by ``ClipScore.tiny`` / ``DinoDistance.tiny`` / ``EditMetrics.tiny`` so that tests and
examples run the real transformers classes end to end without downloading anything. The numbers
they produce are meaningless; shapes, preprocessing, batching and conventions are not.

The CLIP tokenizer is :mod:`coupled_sde._tiny_text`'s, shared with the tiny diffusers pipelines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coupled_sde._optional import require

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["CLIP_CONTEXT_LENGTH", "clip_image_processor_class", "tiny_clip_tokenizer", "tiny_vit"]

#: CLIP's text context length (tokens, including the start and end tokens).
CLIP_CONTEXT_LENGTH = 77


def tiny_clip_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE ``CLIPTokenizer`` with a 514-symbol vocabulary and two merges
    (:func:`coupled_sde._tiny_text.tiny_clip_tokenizer`): about one token per character, which makes
    77-token truncation easy to exercise."""
    require("transformers", "metrics")
    from coupled_sde._tiny_text import tiny_clip_tokenizer as build

    return build(merges=(("c", "a"), ("ca", "t</w>")), max_length=CLIP_CONTEXT_LENGTH)


def clip_image_processor_class() -> Any:
    """The PIL-based CLIP image processor class.

    transformers >= 5 makes ``CLIPImageProcessor`` a torchvision-backed processor that falls back
    (with a warning) to ``CLIPImageProcessorPil`` when torchvision is missing; older versions only
    have the PIL one, under the plain name. We only read its configuration (sizes, mean, std).
    """
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def tiny_vit(seed: int = 0) -> Any:
    """A tiny random-weight ``ViTModel`` without pooler (224 input, patch 16, width 32, two layers):
    the offline stand-in for DINO ViT-S/16 and ViT-B/8 (``DinoDistance.tiny``, ``StructureDistance.tiny``)."""
    require("transformers", "metrics")
    import torch
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(image_size=224, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ViTModel(config, add_pooling_layer=False)
