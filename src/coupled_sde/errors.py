"""Exceptions with the information needed to act on them."""

from __future__ import annotations

__all__ = ["NonFiniteError", "MissingDependencyError"]


class NonFiniteError(FloatingPointError):
    """A drift (or model prediction) produced NaN or Inf.

    Attributes say where: ``step`` (grid step index), ``t`` (its time), ``members`` and ``samples``
    (indices with a non-finite value), and ``state_was_finite`` (False when the state handed to the
    drift was already non-finite, i.e. the previous step's noise or diffusion produced it).
    """

    def __init__(self, message: str, step: int, t: float, members: list[int], samples: list[int], state_was_finite: bool) -> None:
        super().__init__(message)
        self.step, self.t, self.members, self.samples = step, t, members, samples
        self.state_was_finite = state_was_finite


class MissingDependencyError(ImportError):
    """An optional dependency is missing; the message names the extra to install."""
