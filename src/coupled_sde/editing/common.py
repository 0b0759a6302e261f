"""What every editing method shares: its result, its inputs checked once, its grid, its noise.

:func:`begin` is the first line of every method: it validates the latents and the mask, resolves
the settings (method defaults < backbone defaults < the caller's), fills the conditions' guidance,
builds the schedule's grid (or checks the caller's) and the integrator. :func:`normals` turns the
``noise=`` argument -- a seed, per-sample seeds, a Brownian source or recorded standard normals --
into the standard normals of the grid's steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..backends.base import Condition
from ..brownian import BrownianSource, GridBrownian, sample_seed
from ..grid import TimeGrid
from ..integrators import Integrator
from .members import editing_integrator
from .registry import STEPS, get_method, resolve_settings, split_settings

__all__ = ["Edit", "EditResult", "Noise", "Seeds", "Timer", "as_condition", "begin", "derive_seeds", "normals"]

#: One integer for the whole batch (sample b uses (seed, b)) or one seed per sample.
Seeds = int | Sequence[int]
#: What ``noise=`` accepts: seeds, a Brownian source, or recorded standard normals (a tensor).
Noise = int | Sequence[int] | BrownianSource | torch.Tensor


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


def derive_seeds(seed: Seeds, stream: int) -> list[int] | int:
    """Independent seeds for another use of randomness (VAE sampling, extra streams, ...), keeping
    per-sample seeds per-sample."""
    if isinstance(seed, int):
        return sample_seed(seed, stream, 0xED17) >> 2
    return [sample_seed(int(s), stream, 0xED17) >> 2 for s in seed]


def is_seed(noise: Any) -> bool:
    return (isinstance(noise, int) and not isinstance(noise, bool)) or (
        isinstance(noise, Sequence) and not isinstance(noise, str) and all(isinstance(s, int) for s in noise)
    )


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


@dataclass
class Edit:
    """An edit's checked inputs: latents, conditions, grids, options, integrator."""

    method: str
    backbone: Any
    x: torch.Tensor
    source: Condition
    target: Condition
    full: TimeGrid  # the whole sampling grid
    grid: TimeGrid  # from the start index down to the data
    options: dict[str, Any]  # resolved keyword arguments of the method
    settings: dict[str, Any]  # resolved settings (settings vocabulary), for the report
    mask: torch.Tensor | None
    integrator: Integrator | None

    def result(self, latents: torch.Tensor, calls: int, evaluations: int, seconds: float, **report: Any) -> EditResult:
        settings = {**self.settings, "t0": self.grid[0], **report}
        return EditResult(latents, self.method, settings, calls, evaluations, seconds)


def begin(
    fn: Any,
    backbone: Any,
    x: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    grid: TimeGrid | Sequence[float] | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    default_eta: float = 1.0,
    **options: Any,
) -> Edit:
    """Check and resolve everything a method needs before any model call (see the module docstring).

    ``options`` are the method's keyword arguments as the caller gave them (``None`` = default);
    ``default_eta`` is the noise scale of methods without an ``eta`` setting (0 for ODE methods).
    """
    method = get_method(fn.method)
    if mask is not None and not method.masks:
        raise ValueError(f"{method.name} does not support masks")
    x = as_latents(x)
    given = {name: options.get(s.keyword) for name, s in method.settings.items() if options.get(s.keyword) is not None}
    if grid is not None:
        grid = grid if isinstance(grid, TimeGrid) else TimeGrid(grid)
        if given.setdefault("steps", grid.n_steps) != grid.n_steps:
            raise ValueError(f"{grid.n_steps} steps in the given grid but n_steps={given['steps']}")
    settings = resolve_settings(backbone, method.name, given)
    src, tgt, kwargs = split_settings(method.name, settings, source, target)
    schedule = backbone.schedule
    n_steps = kwargs.get("n_steps", STEPS.default)
    full = grid if grid is not None else schedule.grid(n_steps, tuple(x.shape[1:]))
    start = kwargs.get("start", 0)
    if "n_max" in kwargs and "start" not in given:
        start = n_steps - kwargs["n_max"]
    sub = start_grid(full, start, schedule, ode=method.starts_at_noise) if "start" in method.settings else full
    eta = kwargs.get("eta", default_eta)
    integ = editing_integrator(kwargs.get("integrator"), schedule, eta) if "integrator" in method.settings else None
    if integ is not None:
        settings["integrator"] = str(kwargs.get("integrator") or schedule.default_integrator)
    return Edit(method.name, backbone, x, src, tgt, full, sub, kwargs, settings, check_mask(mask, x), integ)


def start_grid(grid: TimeGrid, start: int, schedule: Any, ode: bool = False) -> TimeGrid:
    """The grid from point ``start`` (the paper's ``i0``) down to the data, with the checks users need
    (``ode``: the method integrates the probability-flow ODE, which may start at pure noise)."""
    if isinstance(start, bool) or int(start) != start:
        raise ValueError(f"start must be an integer step index, got {start!r}")
    start = int(start)
    if not 0 <= start < grid.n_steps:
        raise ValueError(f"start={start} is outside the schedule's steps 0..{grid.n_steps - 1}")
    if grid.increasing:
        raise ValueError("editing grids run from noise to data: the grid must decrease")
    schedule.check_start(grid[start], ode=ode)
    return grid.sub(start)


def as_latents(x: torch.Tensor) -> torch.Tensor:
    """Source latents ``(B, *latent)`` as float32/float64 (SDE arithmetic in float32 even when the model runs in bf16)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"latents must be a tensor of shape (batch, *latent), got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise TypeError(f"latents must be floating point, got {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("the source latents contain NaN or Inf")
    return x


def check_mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A mask broadcastable to the latents, values in [0, 1] (1 = editable)."""
    if mask is None:
        return None
    m = torch.as_tensor(mask, dtype=x.dtype, device=x.device)
    try:
        shape = torch.broadcast_shapes(m.shape, x.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(m.shape)} does not broadcast to the latents {tuple(x.shape)}") from None
    if shape != x.shape:
        raise ValueError(f"mask of shape {tuple(m.shape)} would broadcast the latents {tuple(x.shape)} to a larger shape")
    if (m < 0).any() or (m > 1).any():
        raise ValueError("mask values must lie in [0, 1] (1 = editable)")
    return m


def normals(noise: Noise, grid: TimeGrid, x: torch.Tensor, streams: int = 1) -> torch.Tensor:
    """Standard normals ``(streams, B, n_steps, *latent)`` of ``grid``'s steps from ``noise``.

    Seeds: a :class:`~coupled_sde.brownian.GridBrownian` on ``grid`` (float32). A Brownian source:
    its increments on ``grid`` divided by ``sqrt|dt|`` (a ``GridBrownian`` on that grid: its normals
    as they are). A tensor: recorded normals, ``(B, n_steps, *latent)`` for one stream.
    """
    B, latent, n = x.shape[0], tuple(x.shape[1:]), grid.n_steps
    want = (streams, B, n) + latent
    if is_seed(noise):
        out = GridBrownian(grid, B, latent, seed=noise, streams=streams, dtype=torch.float32).normals(0, n)
    elif isinstance(noise, torch.Tensor):
        out = noise.unsqueeze(0) if noise.dim() == len(want) - 1 else noise
    elif isinstance(noise, GridBrownian) and noise.grid == grid:
        out = noise.normals(0, n)
    elif hasattr(noise, "on_grid"):
        inc = noise.on_grid(grid)
        scale = torch.tensor([math.sqrt(abs(dt)) for _, dt in grid.steps()], dtype=inc.dtype, device=inc.device)
        out = inc / scale.reshape((1, 1, n) + (1,) * len(latent))
    else:
        raise TypeError(f"noise must be a seed, per-sample seeds, a Brownian source or a tensor of normals; got {type(noise).__name__}")
    if tuple(out.shape) != want:
        raise ValueError(f"the noise gives normals of shape {tuple(out.shape)}, this edit needs {want} (streams, batch, steps, *latent)")
    return out.to(x.device)
