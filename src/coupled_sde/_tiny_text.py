"""The tiny offline CLIP tokenizer, written once for the tiny pipelines and the tiny metrics.

A byte-level BPE ``CLIPTokenizer`` whose vocabulary has every byte symbol (GPT-2 / CLIP's
byte-to-unicode table) with and without CLIP's end-of-word suffix ``</w>``, the two special
tokens and a few merges, so any text tokenizes (mostly one token per character). It is written as
``vocab.json`` / ``merges.txt`` to a temporary folder and loaded with
``CLIPTokenizer.from_pretrained``, as a checkpoint's tokenizer would be. transformers is imported
inside the function.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["byte_symbols", "tiny_clip_tokenizer"]


def byte_symbols() -> list[str]:
    """The 256 printable characters of GPT-2/CLIP's byte-level BPE, one per byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = [chr(b) for b in printable]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def tiny_clip_tokenizer(merges: Sequence[tuple[str, str]] = (("c", "a"), ("ca", "t</w>")), max_length: int = 77) -> Any:
    """A ``CLIPTokenizer`` with ``2 + 2 * 256 + len(merges)`` tokens and context length ``max_length``."""
    from transformers import CLIPTokenizer

    symbols = byte_symbols()
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (path / "merges.txt").write_text("\n".join(["#version: 0.2", *(" ".join(m) for m in merges)]) + "\n", encoding="utf-8")
        (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}), encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    tokenizer.model_max_length = max_length
    return tokenizer
