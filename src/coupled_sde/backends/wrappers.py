"""Backbone wrappers: evaluate members in separate calls (for comparisons), and count/time calls."""

from __future__ import annotations

import time
from typing import Any

import torch

from .base import Condition

__all__ = ["SeparateCalls", "TimedCalls"]


class SeparateCalls:
    """Evaluates each member in its own model call, as the reference implementations of sync-SDE and
    FlowEdit do; everything else is delegated. Exists to measure what the fused call saves."""

    def __init__(self, backbone: Any) -> None:
        self.backbone = backbone

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backbone, name)

    def encode_conditions(self, conditions: list[Condition]) -> list[Any]:
        return [self.backbone.encode_conditions([c]) for c in conditions]

    def predict(self, x: torch.Tensor, t: float, encoded: list[Any]) -> torch.Tensor:
        return torch.cat([self.backbone.predict(x[k : k + 1], t, e) for k, e in enumerate(encoded)])


class TimedCalls:
    """Counts ``predict`` calls and the wall time spent inside them (synchronising CUDA), and the time
    spent encoding conditions, so that the solver's own overhead is what remains of an edit's time."""

    def __init__(self, backbone: Any) -> None:
        self.backbone = backbone
        self.calls, self.seconds, self.encode_seconds = 0, 0.0, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backbone, name)

    def encode_conditions(self, conditions: list[Condition]) -> Any:
        t0 = time.perf_counter()
        out = self.backbone.encode_conditions(conditions)
        self.encode_seconds += time.perf_counter() - t0
        return out

    def predict(self, x: torch.Tensor, t: float, encoded: Any) -> torch.Tensor:
        cuda = x.is_cuda
        if cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        out = self.backbone.predict(x, t, encoded)
        if cuda:
            torch.cuda.synchronize(x.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out
