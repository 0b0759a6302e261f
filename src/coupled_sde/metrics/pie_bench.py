"""PIE-Bench's metrics (Ju et al. 2024, "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines
of Code", ``evaluation/evaluate.py`` of the PnPInversion repository), per (source, edit, mask).

The mask marks the *edited* region (1 = edited; PIE-Bench's decoded annotation, borders included).
With the script's default metric list:

* ``structure_distance`` -- :class:`~coupled_sde.metrics.structure.StructureDistance` on the whole images;
* ``psnr_unedit_part``, ``lpips_unedit_part``, ``mse_unedit_part``, ``ssim_unedit_part`` -- both
  images multiplied by ``1 - mask`` on the ``[0, 1]`` scale (the edited region set to black), then
  the whole-image metric, exactly as the script does it (the black region counts as agreeing);
  NaN when nothing lies outside the mask;
* ``clip_similarity_source_image`` / ``clip_similarity_target_image`` -- CLIP score of the source with the
  source prompt and of the edit with the target prompt;
* ``clip_similarity_target_image_edit_part`` -- CLIP score of ``edit * mask`` (black outside) with
  the target prompt; NaN for an empty mask.

CLIP scores are torchmetrics' ``CLIPScore`` convention, ``max(100 cos, 0)``, with
``openai/clip-vit-large-patch14``. LPIPS is the script's SqueezeNet variant
(:class:`~coupled_sde.metrics.lpips_squeeze.LPIPSSqueeze`) at the images' own size; any
``lpips(a, b) -> (B,)`` may be passed instead (e.g. the VGG :class:`~coupled_sde.metrics.lpips.LPIPS`). Prompts lose PIE-Bench's ``[`` ``]``
word markers (the script does the same).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from coupled_sde.metrics._image import as_unit_range, check_pair
from coupled_sde.metrics.pixel import l2
from coupled_sde.metrics.ssim import psnr, ssim

__all__ = ["PIE_CLIP_MODEL", "PIE_METRICS", "PieBenchMetrics", "strip_markers"]

#: The CLIP checkpoint of PIE-Bench's script (torchmetrics' ``CLIPScore`` default).
PIE_CLIP_MODEL = "openai/clip-vit-large-patch14"

#: The script's default metrics, in its order.
PIE_METRICS = (
    "structure_distance",
    "psnr_unedit_part",
    "lpips_unedit_part",
    "mse_unedit_part",
    "ssim_unedit_part",
    "clip_similarity_source_image",
    "clip_similarity_target_image",
    "clip_similarity_target_image_edit_part",
)

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def strip_markers(prompt: str) -> str:
    """PIE-Bench prompts mark the edited words with brackets: ``"a [cat] sitting"`` -> ``"a cat sitting"``."""
    return prompt.replace("[", "").replace("]", "")


def _masked(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` images multiplied by ``keep`` on the ``[0, 1]`` scale (0 -> black), back in ``[-1, 1]``."""
    return as_unit_range(images) * keep * 2.0 - 1.0


def _as_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(mask, dtype=torch.float32, device=images.device)
    if m.dim() == 2:
        m = m[None]
    if m.dim() == 3:
        m = m[:, None]
    if m.dim() != 4 or m.shape[1] != 1 or tuple(m.shape[-2:]) != tuple(images.shape[-2:]) or m.shape[0] not in (1, images.shape[0]):
        raise ValueError(f"the edit mask must be (B, H, W) or (B, 1, H, W) at the images' size {tuple(images.shape[-2:])}, got {tuple(m.shape)}")
    if ((m != 0) & (m != 1)).any():
        raise ValueError("PIE-Bench masks are binary (1 = edited region)")
    return m.expand(images.shape[0], 1, *images.shape[-2:])


@dataclass
class PieBenchMetrics:
    """PIE-Bench's metrics; a metric whose network is ``None`` is skipped (its columns absent).

    ``metrics(source, edited, mask, source_prompts, target_prompts)`` returns ``{name: (B,)}``
    float32 tensors with the names of :data:`PIE_METRICS` that can be computed.
    """

    structure: Metric | None = None
    lpips: Metric | None = None
    clip: Any = None

    @classmethod
    def tiny(cls, seed: int = 0) -> PieBenchMetrics:
        """Tiny random networks (offline; the numbers mean nothing, the conventions do)."""
        from coupled_sde.metrics.clip_score import ClipScore
        from coupled_sde.metrics.lpips_squeeze import LPIPSSqueeze
        from coupled_sde.metrics.structure import StructureDistance

        return cls(StructureDistance.tiny(seed), LPIPSSqueeze.random(seed), ClipScore.tiny(seed))

    @classmethod
    def from_pretrained(
        cls,
        lpips_squeezenet_weights: str | None = None,
        lpips_lin_weights: str | None = None,
        device: Any = None,
        clip_model: str | None = PIE_CLIP_MODEL,
        structure_model: str | None = None,
    ) -> PieBenchMetrics:
        """Real networks: DINO ViT-B/8 (structure), CLIP ViT-L/14 and, given its two local files
        (torchvision's ``squeezenet1_1`` weights, lpips' ``v0.1/squeeze.pth``), SqueezeNet LPIPS."""
        from coupled_sde.metrics.clip_score import ClipScore
        from coupled_sde.metrics.lpips_squeeze import LPIPSSqueeze
        from coupled_sde.metrics.structure import DEFAULT_STRUCTURE_MODEL, StructureDistance

        lpips = None
        if lpips_squeezenet_weights and lpips_lin_weights:
            lpips = LPIPSSqueeze.from_pretrained(lpips_squeezenet_weights, lpips_lin_weights)
            lpips = lpips.to(device) if device is not None else lpips
        structure = StructureDistance.from_pretrained(structure_model or DEFAULT_STRUCTURE_MODEL, device=device)
        clip = ClipScore.from_pretrained(clip_model, device=device) if clip_model else None
        return cls(structure, lpips, clip)

    def __call__(
        self,
        source: torch.Tensor,
        edited: torch.Tensor,
        mask: torch.Tensor,
        source_prompts: Sequence[str],
        target_prompts: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        check_pair(source, edited)
        m = _as_mask(mask, source)
        keep = 1.0 - m
        nan = torch.full((source.shape[0],), float("nan"))
        outside = keep.flatten(1).sum(1) > 0
        inside = m.flatten(1).sum(1) > 0
        out: dict[str, torch.Tensor] = {}
        if self.structure is not None:
            out["structure_distance"] = self.structure(source, edited).float().cpu()
        a, b = _masked(source, keep), _masked(edited, keep)
        unedited = {"psnr_unedit_part": psnr, "lpips_unedit_part": self.lpips, "mse_unedit_part": l2, "ssim_unedit_part": ssim}
        for name, metric in unedited.items():
            if metric is not None:
                out[name] = torch.where(outside.cpu(), metric(a, b).float().cpu(), nan)
        if self.clip is not None:
            src_prompts = [strip_markers(p) for p in source_prompts]
            tgt_prompts = [strip_markers(p) for p in target_prompts]
            out["clip_similarity_source_image"] = self._clip(source, src_prompts)
            out["clip_similarity_target_image"] = self._clip(edited, tgt_prompts)
            out["clip_similarity_target_image_edit_part"] = torch.where(inside.cpu(), self._clip(_masked(edited, m), tgt_prompts), nan)
        return out

    def _clip(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.clip(images, prompts).float().clamp(min=0.0).cpu()
