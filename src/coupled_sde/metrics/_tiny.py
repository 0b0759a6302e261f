"""Tiny, offline stand-ins for the metric networks' checkpoints (random weights, local tokenizer).

Used by ``ClipScore.tiny`` / ``DinoDistance.tiny`` / ``EditMetrics.tiny`` so that tests and
examples run the real transformers classes end to end without downloading anything. The numbers
they produce are meaningless; shapes, preprocessing, batching and conventions are not.

``coupled_sde.backends.hf.tiny`` has a similar CLIP tokenizer builder, but it is private
(and belongs to the diffusers extra), so the metrics build their own here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coupled_sde._optional import require

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["CLIP_CONTEXT_LENGTH", "clip_image_processor_class", "tiny_clip_tokenizer"]

#: CLIP's text context length (tokens, including the start and end tokens).
CLIP_CONTEXT_LENGTH = 77


def _byte_symbols() -> list[str]:
    """The 256 printable characters of GPT-2/CLIP's byte-level BPE, one per byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = [chr(b) for b in printable]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def tiny_clip_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE ``CLIPTokenizer`` with a 514-symbol vocabulary and two merges.

    Every byte symbol appears with and without CLIP's end-of-word suffix ``</w>``, so any text
    tokenizes (about one token per character, which makes 77-token truncation easy to exercise).
    Written as ``vocab.json`` / ``merges.txt`` to a temporary folder and loaded with
    ``CLIPTokenizer.from_pretrained``, as a checkpoint's tokenizer would be.
    """
    require("transformers", "metrics")
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    merges = [("c", "a"), ("ca", "t</w>")]
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (path / "merges.txt").write_text("\n".join(["#version: 0.2", *(" ".join(m) for m in merges)]) + "\n", encoding="utf-8")
        (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": CLIP_CONTEXT_LENGTH}), encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    tokenizer.model_max_length = CLIP_CONTEXT_LENGTH
    return tokenizer


def clip_image_processor_class() -> Any:
    """The PIL-based CLIP image processor class.

    transformers >= 5 makes ``CLIPImageProcessor`` a torchvision-backed processor that falls back
    (with a warning) to ``CLIPImageProcessorPil`` when torchvision is missing; older versions only
    have the PIL one, under the plain name. We only read its configuration (sizes, mean, std).
    """
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
