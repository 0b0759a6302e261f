"""Couplings: how K member processes get their Brownian increments from S independent streams.

Every coupling here leaves each member's increment *exactly* ``N(0, |dt| I)`` (its marginal law);
what changes is the joint law of the members' increments:

* :class:`Synchronous` -- all members use one increment (``S = 1``). For two processes with the same
  diffusion, ``E||dY - dX||^2 = ||b_Y - b_X||^2 dt^2 + g^2 E||dW' - dW||^2`` and the noise term
  vanishes: the synchronous coupling minimises the local quadratic deviation (sync-SDE,
  Zhang & Scott; docs/concepts.md).
* :class:`Independent` -- one stream per member (``S = K``): SDEdit-style fresh noise.
* :class:`Correlated` -- a **correlation** matrix ``C`` (unit diagonal), *not* a covariance: member
  increments are ``L z`` with ``L L^T = C``, so ``corr(dW_j, dW_k) = C_jk`` and each member keeps
  variance ``|dt|`` (StochasticDiffEq.jl#262 is the confusion this avoids). ``Correlated(rho)``
  gives every pair the correlation ``rho``.
* :class:`Reflection` -- member k >= 1 uses ``(I - 2 e e^T) dW`` with ``e`` the unit vector from
  member 0 to member k (per sample, over the event dimensions): the classical coupling that makes
  continuous-time processes *meet*. In discrete time members cross rather than land on the same
  point, so it keeps reflecting; only members that are exactly equal (``e`` undefined, e.g. equal
  initial states) move synchronously.

A coupling works on tensors ``(S, B, *noise)``; linear couplings are applied once to the whole
increment table before the loop, reflection at every step from the current states.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["Coupling", "Synchronous", "Independent", "Correlated", "Reflection", "resolve_coupling"]

Tensor = torch.Tensor


class Coupling:
    """Maps ``S`` independent increments to ``K`` members' increments."""

    #: True when the members' increments depend on the current states (applied per step).
    state_dependent: bool = False

    def n_streams(self, n_members: int) -> int:
        raise NotImplementedError

    def combine(self, z: Tensor, states: Tensor | None = None) -> Tensor:
        """``z``: ``(S, B, *noise)`` (or ``(S, B, N, *noise)`` for a whole table of a linear
        coupling); returns ``(K, ...)``. ``states`` ``(K, B, *event)`` for state-dependent couplings."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Synchronous(Coupling):
    """Every member uses the same increment (a view: no copy)."""

    def __init__(self, n_members: int | None = None) -> None:
        self._k = n_members

    def n_streams(self, n_members: int) -> int:
        self._k = n_members
        return 1

    def combine(self, z: Tensor, states: Tensor | None = None) -> Tensor:
        k = states.shape[0] if states is not None else self._k
        return z.expand((k,) + tuple(z.shape[1:]))


class Independent(Coupling):
    """One independent increment per member."""

    def n_streams(self, n_members: int) -> int:
        return n_members

    def combine(self, z: Tensor, states: Tensor | None = None) -> Tensor:
        return z


class Correlated(Coupling):
    """Member increments with a prescribed **correlation** (not covariance).

    ``Correlated(rho)`` -- every pair of members has correlation ``rho`` (needs
    ``rho >= -1 / (K - 1)``); ``Correlated(matrix)`` -- a full ``K x K`` correlation matrix.
    ``rho = 1`` is the synchronous coupling, ``rho = 0`` the independent one, and for two members
    ``rho = -1`` the antithetic one.
    """

    def __init__(self, rho: float | Sequence[Sequence[float]] | Tensor) -> None:
        self._rho = rho
        self._factor: Tensor | None = None
        if not isinstance(rho, (int, float)):
            self._factor = _correlation_factor(torch.as_tensor(rho, dtype=torch.float64))
        elif not -1.0 <= float(rho) <= 1.0:
            raise ValueError(f"a correlation must lie in [-1, 1], got {rho!r}")

    def factor(self, n_members: int) -> Tensor:
        if self._factor is None or self._factor.shape[0] != n_members:
            if not isinstance(self._rho, (int, float)):
                raise ValueError(
                    f"the correlation matrix is {self._factor.shape[0]}x{self._factor.shape[0]} but the system has {n_members} members"
                )
            c = torch.full((n_members, n_members), float(self._rho), dtype=torch.float64)
            c.fill_diagonal_(1.0)
            self._factor = _correlation_factor(c)
        return self._factor

    def n_streams(self, n_members: int) -> int:
        self.factor(n_members)
        return n_members

    def combine(self, z: Tensor, states: Tensor | None = None) -> Tensor:
        L = self.factor(z.shape[0]).to(dtype=z.dtype, device=z.device)
        return torch.tensordot(L, z, dims=([1], [0]))

    def __repr__(self) -> str:
        return f"Correlated({self._rho!r})"


def _correlation_factor(c: Tensor) -> Tensor:
    """``L`` with ``L L^T = c`` for a valid correlation matrix (PSD, unit diagonal, symmetric)."""
    if c.dim() != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"a correlation matrix must be square, got shape {tuple(c.shape)}")
    if not torch.allclose(c, c.T, atol=1e-12):
        raise ValueError("a correlation matrix must be symmetric")
    if not torch.allclose(torch.diagonal(c), torch.ones(c.shape[0], dtype=c.dtype), atol=1e-12):
        raise ValueError(
            "a correlation matrix must have a unit diagonal (this is a correlation, not a covariance: "
            "scale the diffusion to change variances)"
        )
    evals, evecs = torch.linalg.eigh(c)
    if evals.min() < -1e-10:
        raise ValueError(f"the correlation matrix is not positive semi-definite (smallest eigenvalue {evals.min().item():.3g})")
    try:
        return torch.linalg.cholesky(c)
    except RuntimeError:  # singular (e.g. rho = 1 or -1): symmetric square root, rows still unit norm
        return evecs * evals.clamp_min(0).sqrt()


class Reflection(Coupling):
    """Mirror the increment in the direction of the members' separation (members k >= 1 vs member 0).

    Needs the noise to have the state's shape (additive or diagonal noise). With one member there is
    nothing to reflect against and the member keeps its increment.
    """

    state_dependent = True

    def n_streams(self, n_members: int) -> int:
        return 1

    def combine(self, z: Tensor, states: Tensor | None = None) -> Tensor:
        if states is None:
            raise ValueError("the reflection coupling needs the members' current states")
        dw = z[0]
        if dw.shape != states.shape[1:]:
            raise ValueError(
                f"the reflection coupling needs increments shaped like the state {tuple(states.shape[1:])}, got {tuple(dw.shape)}"
            )
        if states.shape[0] == 1:  # one member: nothing to reflect against, its increment is unchanged
            return dw.unsqueeze(0)
        B = dw.shape[0]
        sep = (states[1:] - states[:1]).reshape(states.shape[0] - 1, B, -1).to(dw.dtype)
        norm = sep.norm(dim=-1, keepdim=True)
        e = torch.where(norm > 0, sep / norm.clamp_min(torch.finfo(sep.dtype).tiny), torch.zeros_like(sep))
        flat = dw.reshape(1, B, -1)
        reflected = flat - 2.0 * e * (e * flat).sum(-1, keepdim=True)
        return torch.cat([flat, reflected], 0).reshape((states.shape[0],) + tuple(dw.shape))


def resolve_coupling(coupling: Coupling | str | float | None) -> Coupling:
    """Accept a coupling object, a name (``"synchronous"``, ``"independent"``, ``"reflection"``) or a
    correlation ``rho``."""
    if coupling is None:
        return Synchronous()
    if isinstance(coupling, Coupling):
        return coupling
    if isinstance(coupling, (int, float)) and not isinstance(coupling, bool):
        return Correlated(float(coupling))
    names = {"synchronous": Synchronous, "sync": Synchronous, "independent": Independent, "reflection": Reflection}
    try:
        return names[str(coupling).lower()]()
    except KeyError:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of {sorted(names)} or a correlation in [-1, 1]") from None
