"""Image-editing metrics of the paper's evaluation protocol (Zhang & Scott's protocol; docs/guides/dataset-runs.md), in torch.

* :class:`ClipScore` -- ``100 * cos`` of CLIP ViT-L/14@336 image and text embeddings
  (Radford et al. 2021); edit fidelity, higher is better.
* :class:`LPIPS` -- VGG16 LPIPS v0.1 (Zhang et al. 2018) at 1024x1024; structure preservation,
  lower is better.
* :class:`DinoDistance` -- ``1 - cos`` of DINO ViT-S/16 CLS features (Caron et al. 2021).
* :func:`l1_255`, :func:`l2` -- pixel distances.
* :class:`EditMetrics` -- all of them per (source, edit, target prompt).
* PIE-Bench's protocol: :class:`StructureDistance` (DINO ViT-B/8 key self-similarity), :func:`ssim`,
  :func:`psnr`, and :class:`PieBenchMetrics` (all of them outside / inside the edit mask).

Every metric takes float RGB batches ``(B, 3, H, W)`` in ``[-1, 1]`` and returns ``(B,)`` float32.
Preprocessing is done in torch; torchvision is not needed. The pixel metrics and LPIPS need only
torch; CLIP and DINO need the optional extra ``pip install "coupled-sde[metrics]"`` (transformers,
imported lazily: constructing them without it raises an ``ImportError`` saying so).
"""

from __future__ import annotations

from coupled_sde.metrics.clip_score import DEFAULT_CLIP_MODEL, ClipScore
from coupled_sde.metrics.dino import DEFAULT_DINO_MODEL, DinoDistance
from coupled_sde.metrics.edit_metrics import EditMetrics
from coupled_sde.metrics.lpips import LPIPS
from coupled_sde.metrics.lpips_squeeze import LPIPSSqueeze
from coupled_sde.metrics.pie_bench import PieBenchMetrics
from coupled_sde.metrics.pixel import l1_255, l2
from coupled_sde.metrics.ssim import psnr, ssim
from coupled_sde.metrics.structure import StructureDistance

__all__ = ["ClipScore", "DEFAULT_CLIP_MODEL", "DEFAULT_DINO_MODEL", "DinoDistance", "EditMetrics", "LPIPS", "l1_255", "l2", "PieBenchMetrics", "StructureDistance", "LPIPSSqueeze", "psnr", "ssim"]
