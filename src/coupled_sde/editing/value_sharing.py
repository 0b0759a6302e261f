"""Attention values shared from an inversion to the edit that follows it: the feature sharing of
RF-Solver-Edit (Wang et al., "Taming Rectified Flow for Inversion and Editing", 2024, §4.2) and
FireFlow (Deng et al., ICML 2025, §4).

Those editors invert the source image with the ODE, then regenerate under the target prompt; in
the first few regeneration steps (the ones nearest the noise, where the layout forms) the value
projections ``V`` of the late attention layers are replaced by the ones the inversion computed on
the same interval of the grid. Queries and keys come from the edit, so attention still follows the
target prompt while what it reads is the source's: structure is kept, the prompt decides where to
look.

A :class:`SharedValues` object is the store and its clock. Keys are ``(interval, stage, layer)``:
``interval`` is the index ``j`` of the editing grid's step ``t_j -> t_{j+1}`` (0 = nearest the
noise), ``stage`` the evaluation's place inside the step as a fraction of it (0 at the step's start,
½ at RF-Solver's and FireFlow's midpoint), measured in the direction that solve integrates. So the
inversion's step over interval ``j`` (from ``t_{j+1}`` up to ``t_j``) records what the edit's step
over the same interval (from ``t_j`` down to ``t_{j+1}``) reads, stage by stage -- exactly the pairing
of the authors' code, which keys features by the interval's noisier end and a first/second-order
flag. A stage with nothing recorded (FireFlow reuses the previous midpoint velocity, so most
inversion steps evaluate the midpoint only) is left as the edit computes it, as theirs does.

The object knows nothing of models: a backbone that can share values
(``backbone.share_attention_values(shared)``, FLUX.1's single-stream blocks) calls :meth:`tap` with
each selected layer's value projection; the member system calls :meth:`at` with the grid time of
each model call; :meth:`recording` and :meth:`injecting` return the ``solve`` callback that counts
the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..grid import TimeGrid

__all__ = ["SharedValues", "can_share_values", "require_value_sharing"]

Tensor = torch.Tensor
Key = tuple[int, float]


def can_share_values(backbone: Any) -> bool:
    """Whether a backbone (an instance or its class) can share attention values: it has ``share_attention_values``."""
    return callable(getattr(backbone, "share_attention_values", None))


def require_value_sharing(backbone: Any) -> None:
    """A one-line ``ValueError`` for ``share_values`` on a backbone (instance or class) that cannot share them."""
    if not can_share_values(backbone):
        cls = backbone if isinstance(backbone, type) else type(backbone)
        name = getattr(cls, "name", "") or cls.__name__
        raise ValueError(f"share_values needs a backbone that can share attention values (FLUX.1); {name} cannot")


class SharedValues:
    """Record attention values along an inversion and hand them to the edit's first ``steps`` steps.

    Args:
        grid: the editing grid, decreasing from ``t_{i0}`` to the data (the inversion runs it reversed).
        steps: how many editing steps, from the first (the noisiest), take the inversion's values;
            0 shares nothing. The authors' ``--inject``.
        batch: the number of samples ``B``. Each model call evaluates ``K`` members (and guidance rows)
            of ``B`` samples, row ``r`` being sample ``r mod B``; the inversion's first ``B`` rows (the
            source member's conditional rows) are stored and every row of the edit reads its sample's.

    The values stay on the device they were computed on: with ``L`` tokens of width ``D`` in
    ``n_layers`` layers, the store holds ``steps x stages x n_layers x B x L x D`` numbers (FLUX.1-dev at
    1024², 18 layers, RF-Solver's 2 stages and 5 steps: about 5 GB in bfloat16).
    """

    def __init__(self, grid: TimeGrid, steps: int, batch: int) -> None:
        if isinstance(steps, bool) or int(steps) != steps or steps < 0:
            raise ValueError(f"the number of steps that share attention values must be an integer >= 0, got {steps!r}")
        if steps > grid.n_steps:
            raise ValueError(f"share_values={steps} exceeds the edit's {grid.n_steps} steps")
        if grid.increasing:
            raise ValueError("the editing grid decreases from noise to data; got an increasing grid")
        self.grid, self.steps, self.batch = grid, int(steps), int(batch)
        self.mode: str | None = None
        self._store: dict[tuple[Key, int], Tensor] = {}
        self._solved: list[tuple[float, float]] = []
        self._step = 0
        self._key: Key | None = None
        #: Values read from the store during the edit (for reports and tests).
        self.injected = 0

    # -- the clock ---------------------------------------------------------------------------------

    def recording(self) -> Callable[[int, float, Tensor], None]:
        """Start recording (the inversion: solve the reversed grid); returns solve's step callback."""
        return self._start("record", TimeGrid(self.grid.times.flip(0)))

    def injecting(self) -> Callable[[int, float, Tensor], None]:
        """Start reading (the edit: solve ``grid``); returns solve's step callback."""
        return self._start("inject", self.grid)

    def stop(self) -> None:
        """Neither record nor read (model calls pass through)."""
        self.mode, self._key = None, None

    def _start(self, mode: str, solved: TimeGrid) -> Callable[[int, float, Tensor], None]:
        self.mode, self._solved, self._step, self._key = mode, solved.steps(), 0, None

        def advance(i: int, t_next: float, y: Tensor) -> None:
            self._step = i + 1

        return advance

    def at(self, t: float) -> None:
        """The member system is about to call the model at grid time ``t`` (within the current step)."""
        self._key = None
        if self.mode is None or self._step >= len(self._solved):
            return
        start, dt = self._solved[self._step]
        n = len(self._solved)
        interval = n - 1 - self._step if self.mode == "record" else self._step
        if interval < self.steps:
            self._key = (interval, round((t - start) / dt, 9))

    # -- the store ---------------------------------------------------------------------------------

    def tap(self, layer: int, value: Tensor) -> Tensor:
        """The value projection of ``layer`` for this model call: stored (recording), replaced (reading) or as is."""
        if self._key is None:
            return value
        key = (self._key, int(layer))
        if self.mode == "record":
            self._store[key] = value[: self.batch].detach().clone()
            return value
        stored = self._store.get(key)
        if stored is None:
            return value
        rows = value.shape[0]
        if rows % self.batch or stored.shape[1:] != value.shape[1:]:
            raise ValueError(
                f"layer {layer}: the recorded values have shape {tuple(stored.shape)} but this call's are "
                f"{tuple(value.shape)} (the source and target prompts must encode to the same number of tokens)"
            )
        self.injected += 1
        return stored.to(value).repeat((rows // self.batch,) + (1,) * (value.dim() - 1))

    @property
    def recorded(self) -> int:
        """How many (interval, stage, layer) values are stored."""
        return len(self._store)

    def keys(self) -> list[tuple[Key, int]]:
        """The stored keys ``((interval, stage), layer)``, sorted."""
        return sorted(self._store)
