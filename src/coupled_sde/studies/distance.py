"""Distances between coupled members over time: how tightly a coupling holds members together."""

from __future__ import annotations

import torch

__all__ = ["member_distance"]


def member_distance(ys: torch.Tensor, reference: int = 0) -> torch.Tensor:
    """Mean Euclidean distance of every member to member ``reference`` at every saved time.

    ``ys``: ``(T, K, B, *event)`` (``Solution.ys`` of a coupled solve). Returns ``(T, K)`` (the
    reference's own column is zero), averaged over the batch.
    """
    if ys.dim() < 3:
        raise ValueError(f"expected saved states (T, K, B, *event), got shape {tuple(ys.shape)}")
    diff = (
        (ys - ys[:, reference : reference + 1]).flatten(3)
        if ys.dim() > 3
        else (ys - ys[:, reference : reference + 1]).unsqueeze(-1)
    )
    return diff.norm(dim=-1).mean(-1)
