"""All of the paper's editing metrics at once (Zhang & Scott's protocol; docs/guides/dataset-runs.md).

Per edit: CLIP score of the edited image with the target prompt (fidelity to the edit, higher is
better), and LPIPS, DINO distance and L1 between the source image and the edit (preservation of
the source, lower is better).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from coupled_sde.metrics._image import check_pair
from coupled_sde.metrics.clip_score import DEFAULT_CLIP_MODEL, ClipScore
from coupled_sde.metrics.dino import DEFAULT_DINO_MODEL, DinoDistance
from coupled_sde.metrics.lpips import LPIPS
from coupled_sde.metrics.pixel import l1_255

__all__ = ["EditMetrics"]


@dataclass
class EditMetrics:
    """A container of the four metrics; any of them may be ``None`` to skip it.

    Calling it returns a dict with the keys of the metrics present, each a ``(B,)`` float32 tensor
    on the images' device: ``"clip"`` (edited vs target prompt), ``"lpips"``, ``"dino"``,
    ``"l1"`` (source vs edited).

    Example::

        metrics = EditMetrics.from_pretrained("vgg16-397923af.pth", "vgg.pth", device="cuda", dtype=torch.float16)
        scores = metrics(source_images, edited_images, target_prompts)  # images in [-1, 1]
    """

    clip: ClipScore | None = None
    lpips: LPIPS | None = None
    dino: DinoDistance | None = None
    l1: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = l1_255

    @classmethod
    def from_pretrained(
        cls,
        lpips_vgg_weights: str | Path | None,
        lpips_lin_weights: str | Path | None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        clip_model: str | None = DEFAULT_CLIP_MODEL,
        dino_model: str | None = DEFAULT_DINO_MODEL,
        lpips_resize: int | None = 1024,
    ) -> EditMetrics:
        """The paper's metrics with real weights (see :mod:`coupled_sde.metrics.lpips` for the LPIPS files).

        ``dtype`` applies to CLIP and DINO; LPIPS stays in float32 (its per-layer averages of
        small squared differences are sensitive to half precision). Pass ``None`` for a model to
        skip that metric.
        """
        lpips = None
        if lpips_vgg_weights is not None and lpips_lin_weights is not None:
            lpips = LPIPS.from_pretrained(lpips_vgg_weights, lpips_lin_weights, resize=lpips_resize)
            if device is not None:
                lpips = lpips.to(device)
        clip = ClipScore.from_pretrained(clip_model, device=device, dtype=dtype) if clip_model is not None else None
        dino = DinoDistance.from_pretrained(dino_model, device=device, dtype=dtype) if dino_model is not None else None
        return cls(clip=clip, lpips=lpips, dino=dino)

    @classmethod
    def tiny(cls, seed: int = 0, lpips_resize: int | None = None) -> EditMetrics:
        """All four with tiny random-weight networks (offline, for tests).

        LPIPS keeps the full VGG16 widths (its state-dict layout is the point), so by default it
        runs at the input size (``lpips_resize=None``) rather than 1024x1024, which is slow on a CPU.
        """
        return cls(clip=ClipScore.tiny(seed), lpips=LPIPS.random(seed, resize=lpips_resize), dino=DinoDistance.tiny(seed))

    def __call__(
        self, source: torch.Tensor, edited: torch.Tensor, target_prompts: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Compute the metrics present.

        Args:
            source: ``(B, 3, H, W)`` source images in ``[-1, 1]``.
            edited: the edits, same shape.
            target_prompts: ``B`` target prompts; required when the CLIP score is enabled.
        """
        check_pair(source, edited)
        results: dict[str, torch.Tensor] = {}
        if self.clip is not None:
            if target_prompts is None:
                raise ValueError("the CLIP score needs the target prompts")
            results["clip"] = self.clip(edited, target_prompts)
        if self.lpips is not None:
            results["lpips"] = self.lpips(source, edited)
        if self.dino is not None:
            results["dino"] = self.dino(source, edited)
        if self.l1 is not None:
            results["l1"] = self.l1(source, edited)
        return results
