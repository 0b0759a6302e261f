"""The shipped digits model as an editing backbone (classes are the "prompts").

``Condition(prompt=c)`` conditions on digit class ``c`` -- or, with a sequence of B classes, one
class per sample, so a batch of edits with different targets is still one batch; ``prompt=None``
is the null class;
``guidance`` is the classifier-free guidance scale ``u_null + w (u_c - u_null)`` (default 1: the
conditional model alone); ``negative_prompt`` replaces the null class in that formula. All members
and their unconditional entries go through the network in **one** call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...schedules import RectifiedFlow
from ..base import Condition, guided_predict
from ..registry import BackboneInfo, register_backbone
from .network import NULL_CLASS, NUM_CLASSES, DigitsFlowNet, load_flow_network

__all__ = ["DigitsBackbone", "DEFAULT_GUIDANCE"]

#: Guidance at which the shipped model's samples are recognised best (see weights/training.json).
DEFAULT_GUIDANCE = 2.0


@dataclass(frozen=True)
class _Encoded:
    labels: torch.Tensor  # (K, 1) or (K, B): class per member (and sample)
    uncond: torch.Tensor  # (K, 1) or (K, B): label of the unconditional entry
    scales: torch.Tensor  # (K,) guidance
    guided: list[int]  # members with scale != 1


@register_backbone
class DigitsBackbone(BackboneInfo):
    """The shipped 8x8 rectified-flow digits model (``prediction = "flow"``); images are latents."""

    name = "digits"
    prediction = "flow"
    schedule = RectifiedFlow()

    def __init__(
        self, network: DigitsFlowNet | None = None, default_guidance: float = DEFAULT_GUIDANCE, device: str | torch.device = "cpu"
    ) -> None:
        self.network = network if network is not None else load_flow_network(device)
        self.default_guidance = float(default_guidance)
        self.device = next(self.network.parameters()).device

    @staticmethod
    def _labels(p: object) -> list[int]:
        if p is None:
            return [NULL_CLASS]
        values = list(p.tolist() if isinstance(p, torch.Tensor) else p) if isinstance(p, (list, tuple, torch.Tensor)) else [p]
        out = []
        for v in values:
            try:
                c = int(v)
            except (TypeError, ValueError):
                raise ValueError(f"the digits model is conditioned on a class 0..9, got {v!r}") from None
            if not 0 <= c < NUM_CLASSES or c != v:
                raise ValueError(f"the digits model is conditioned on a class 0..9, got {v!r}")
            out.append(c)
        return out

    def encode_conditions(self, conditions: list[Condition]) -> _Encoded:
        per_member = [(self._labels(c.prompt), self._labels(c.negative_prompt)) for c in conditions]
        width = max(max(len(a), len(b)) for a, b in per_member)
        for a, b in per_member:
            for lab in (a, b):
                if len(lab) not in (1, width):
                    raise ValueError(f"per-sample classes must all have the batch's length {width}, got {len(lab)}")
        labels = torch.tensor([a * (width // len(a)) for a, _ in per_member])
        uncond = torch.tensor([b * (width // len(b)) for _, b in per_member])
        scales = [self.default_guidance if c.guidance is None else float(c.guidance) for c in conditions]
        guided = [k for k, s in enumerate(scales) if s != 1.0]
        return _Encoded(labels, uncond, torch.tensor(scales), guided)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: float, encoded: _Encoded) -> torch.Tensor:
        K, B = x.shape[0], x.shape[1]
        if K != len(encoded.labels):
            raise ValueError(f"state has {K} members but {len(encoded.labels)} conditions were encoded")
        if tuple(x.shape[2:]) != (1, 8, 8):
            raise ValueError(f"the digits model takes latents of shape (members, batch, 1, 8, 8), got {tuple(x.shape)}")
        if encoded.labels.shape[1] not in (1, B):
            raise ValueError(f"{encoded.labels.shape[1]} per-sample classes were encoded for a batch of {B}")
        labels, uncond = encoded.labels.expand(K, B), encoded.uncond.expand(K, B)
        sample = torch.arange(B).repeat(K + len(encoded.guided))

        def call(rows: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            lab = torch.where(negative, uncond[member, sample], labels[member, sample]).to(self.device)
            sigma = torch.full((rows.shape[0],), float(t), device=self.device)
            return self.network(rows.to(self.device), sigma, lab).to(x.dtype)

        return guided_predict(x, encoded.guided, encoded.scales[encoded.guided], call)

    def encode_images(self, images: torch.Tensor, generator: object = None) -> torch.Tensor:
        """Images are the model's space: ``(B, 1, 8, 8)`` in [-1, 1], unchanged."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, 8, 8):
            raise ValueError(f"digits images have shape (B, 1, 8, 8), got {tuple(images.shape)}")
        return images.float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1.0, 1.0)
