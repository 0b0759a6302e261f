"""Tiny datasets for the dataset-run tests: random PNGs and a triplets file in the project's format."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image


def save_image(path: Path, seed: int, size: int = 32) -> None:
    """A random ``size x size`` RGB PNG, a function of ``seed``."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.numpy()).save(path)


def write_dataset(folder: Path, n: int = 3) -> Path:
    """Our format: n images, one triplet each."""
    entries = []
    for i in range(n):
        save_image(folder / f"img{i}.png", i)
        entries.append({"image": f"img{i}.png", "source_prompt": "a photo of a cat", "target_prompt": f"a photo of a dog {i}"})
    path = folder / "triplets.json"
    path.write_text(json.dumps(entries))
    return path


def failing_on_the_last_target(edit_tensor):
    """``edit_tensor`` that diverges (``FloatingPointError``) for the triplets whose target prompt ends in 1."""

    def flaky(backbone, image, source_prompt, target_prompt, method="sync-sde", **kw):
        if target_prompt.endswith("1"):
            raise FloatingPointError("diverged")
        return edit_tensor(backbone, image, source_prompt, target_prompt, method, **kw)

    return flaky
