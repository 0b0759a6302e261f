"""What the editing methods share: schedules, start indices, seeds, conditions and results."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..backends.base import Condition
from ..brownian import sample_seed
from ..grid import TimeGrid

__all__ = ["EditResult", "Seeds", "as_condition", "schedule", "start_grid", "derive_seeds", "Timer"]

#: One integer for the whole batch (sample b uses (seed, b)) or one seed per sample.
Seeds = int | Sequence[int]


@dataclass
class EditResult:
    """An edit's output and its cost.

    ``model_calls`` counts batched forward passes of the backbone; ``model_evaluations`` counts
    member evaluations (one per conditioned member per call, the unit the papers report: sync-SDE
    and FlowEdit use 2 per step).
    """

    latents: torch.Tensor
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    model_calls: int = 0
    model_evaluations: int = 0
    seconds: float = 0.0
    images: torch.Tensor | None = None


def as_condition(c: Condition | str | int | None, guidance: float | None = None) -> Condition:
    """Accept a :class:`Condition`, a prompt or a class index; ``guidance`` overrides when given."""
    cond = c if isinstance(c, Condition) else Condition(prompt=c)
    if guidance is not None:
        cond = Condition(cond.prompt, float(guidance), cond.negative_prompt, cond.true_cfg)
    return cond


def schedule(
    backbone: Any, n_steps: int, latent_shape: Sequence[int], sigmas: Sequence[float] | torch.Tensor | None = None
) -> TimeGrid:
    """The backbone's noise-level grid (``sigma`` from ~1 down to 0), or the user's own."""
    if sigmas is not None:
        grid = TimeGrid(sigmas)
        if grid.n_steps != n_steps:
            raise ValueError(f"{grid.n_steps} steps in the given sigmas but n_steps={n_steps}")
        return grid
    if not hasattr(backbone, "sigmas"):
        raise TypeError(f"{type(backbone).__name__} has no sigmas(n_steps, latent_shape): pass sigmas explicitly")
    return TimeGrid(backbone.sigmas(n_steps, tuple(latent_shape)))


def start_grid(grid: TimeGrid, start: int) -> TimeGrid:
    """The grid from point ``start`` (the paper's ``i0``) down to 0, with the checks users need."""
    if isinstance(start, bool) or int(start) != start:
        raise ValueError(f"start must be an integer step index, got {start!r}")
    start = int(start)
    if not 0 <= start < grid.n_steps:
        raise ValueError(f"start={start} is outside the schedule's steps 0..{grid.n_steps - 1}")
    if grid.increasing:
        raise ValueError("editing grids run from noise to data: sigma must decrease")
    if grid[start] >= 1.0:
        raise ValueError(
            f"start={start} begins at sigma={grid[start]:g}: the rectified-flow SDE divides by (1 - sigma), "
            "which is 0 there (0/0 in the reference code). Use start >= 1."
        )
    return grid.sub(start)


def derive_seeds(seed: Seeds, stream: int) -> list[int] | int:
    """Independent seeds for another use of randomness (VAE sampling, extra streams, ...), keeping
    per-sample seeds per-sample."""
    if isinstance(seed, int):
        return sample_seed(seed, stream, 0xED17) >> 2
    return [sample_seed(int(s), stream, 0xED17) >> 2 for s in seed]


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
