"""The SDE protocol: a drift and a diffusion over states of any shape ``(B, *event)``.

``dY = f(t, Y) dt + g(t, Y) dW`` with a declared *noise type* (how ``g`` multiplies ``dW``) and
*calculus* (Itô or Stratonovich). Unlike torchsde, which fixes states to ``(batch, d)``
(torchsde#90), the event shape is free: images ``(C, H, W)``, latents, vectors, scalars.

Noise types and the shape of ``g`` for a state ``y`` of shape ``(B, *event)``:

================  ===============================  ==============================  ===============
noise type        ``g(t, y)``                      Brownian increment per sample    ``g dW``
================  ===============================  ==============================  ===============
``additive``      independent of ``y``;            ``event``                        ``g * dW``
                  broadcastable to ``y``
``diagonal``      same shape as ``y``              ``event``                        ``g * dW``
``scalar``        same shape as ``y`` (or bcast)   ``()`` (one BM per sample)        ``g * dW``
``general``       ``(B, *event, m)``               ``(m,)``                         ``sum_m g dW``
``additive`` with independent of ``y``,              ``(m,)``                         ``sum_m g dW``
``brownian_size`` ``(*event, m)`` (or bcast)
================  ===============================  ==============================  ===============

A *coupled system* (:class:`CoupledSDE`) evaluates K members at once on a stacked state
``(K, B, *event)``; a plain :class:`SDE` followed by every member is called on the flat
``(K * B, *event)`` state, so a coupled solve still makes **one** drift call per stage.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import torch

__all__ = [
    "Calculus",
    "NoiseType",
    "SDE",
    "FunctionSDE",
    "LinearSDE",
    "ODE",
    "CoupledSDE",
    "apply_diffusion",
]

Tensor = torch.Tensor


class Calculus(str, Enum):
    ITO = "ito"
    STRATONOVICH = "stratonovich"


class NoiseType(str, Enum):
    ADDITIVE = "additive"
    DIAGONAL = "diagonal"
    SCALAR = "scalar"
    GENERAL = "general"


class SDE:
    """Base class for ``dY = f(t, Y) dt + g(t, Y) dW``. Subclasses implement :meth:`drift` and
    :meth:`diffusion`; an ODE returns ``None`` from :attr:`noise_type`.

    ``brownian_size`` is the number ``m`` of Brownian motions per sample for ``general`` noise, and
    for ``additive`` noise with a state-independent ``(*event, m)`` matrix (then ``g dW`` sums over
    ``m``); additive noise without it is elementwise.
    """

    noise_type: NoiseType | None = NoiseType.DIAGONAL
    calculus: Calculus = Calculus.ITO
    brownian_size: int | None = None

    def drift(self, t: float, y: Tensor) -> Tensor:
        raise NotImplementedError

    def diffusion(self, t: float, y: Tensor) -> Tensor | float:
        raise NotImplementedError

    def brownian_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape of the Brownian increment driving a state of this event shape."""
        nt = self.noise_type
        if nt is None:
            return ()
        if nt is NoiseType.SCALAR:
            return ()
        if nt is NoiseType.GENERAL or (nt is NoiseType.ADDITIVE and self.brownian_size):
            if not self.brownian_size:
                raise ValueError("an SDE with general noise must declare brownian_size (m)")
            return (int(self.brownian_size),)
        return tuple(event_shape)


class FunctionSDE(SDE):
    """An SDE from two functions ``drift(t, y)`` and ``diffusion(t, y)``.

    >>> import torch
    >>> sde = FunctionSDE(lambda t, y: -y, lambda t, y: 0.5, noise_type="additive")
    >>> sde.drift(0.0, torch.ones(2, 3)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        drift: Callable[[float, Tensor], Tensor],
        diffusion: Callable[[float, Tensor], Tensor | float] | None,
        noise_type: NoiseType | str | None = "diagonal",
        calculus: Calculus | str = "ito",
        brownian_size: int | None = None,
    ) -> None:
        self._f = drift
        self._g = diffusion
        self.noise_type = None if diffusion is None else NoiseType(noise_type)
        self.calculus = Calculus(calculus)
        self.brownian_size = brownian_size

    def drift(self, t: float, y: Tensor) -> Tensor:
        return self._f(t, y)

    def diffusion(self, t: float, y: Tensor) -> Tensor | float:
        if self._g is None:
            raise TypeError("this system is an ODE: it has no diffusion")
        return self._g(t, y)


class ODE(FunctionSDE):
    """``dY = f(t, Y) dt``: the deterministic counterpart (g = 0) of the integrators' SDEs."""

    def __init__(self, drift: Callable[[float, Tensor], Tensor]) -> None:
        super().__init__(drift, None, noise_type=None)


class LinearSDE(SDE):
    """``dY = (a Y + b) dt + (c Y + d) dW`` with scalar or broadcastable-tensor coefficients.

    Additive noise when ``c == 0`` (OU-type), diagonal (multiplicative) otherwise (GBM-type).
    """

    def __init__(
        self,
        a: float | Tensor = 0.0,
        b: float | Tensor = 0.0,
        c: float | Tensor = 0.0,
        d: float | Tensor = 0.0,
        calculus: Calculus | str = "ito",
    ) -> None:
        self.a, self.b, self.c, self.d = a, b, c, d
        self.calculus = Calculus(calculus)
        additive = isinstance(c, (int, float)) and c == 0
        self.noise_type = NoiseType.ADDITIVE if additive else NoiseType.DIAGONAL

    def drift(self, t: float, y: Tensor) -> Tensor:
        if isinstance(self.a, (int, float)) and isinstance(self.b, (int, float)):
            return y.mul(self.a).add_(self.b)
        return self.a * y + self.b

    def diffusion(self, t: float, y: Tensor) -> Tensor | float:
        if self.noise_type is NoiseType.ADDITIVE:
            return self.d
        return self.c * y + self.d


def apply_diffusion(noise_type: NoiseType, g: Tensor | float, dw: Tensor, n_event: int, matrix: bool = False) -> Tensor:
    """``g dW`` for a state with ``n_event`` event dimensions (see the module table); ``matrix``: an
    additive diffusion given as a ``(*event, m)`` matrix (``brownian_size = m``)."""
    if noise_type is NoiseType.GENERAL or matrix:
        return (g * dw.reshape(dw.shape[:-1] + (1,) * n_event + dw.shape[-1:])).sum(-1)
    if noise_type is NoiseType.SCALAR:
        return g * dw.reshape(dw.shape + (1,) * n_event)
    return g * dw


class CoupledSDE(SDE):
    """K member processes evaluated together on a stacked state ``(K, B, *event)``.

    Implement this directly when the members differ (e.g. a model conditioned on a different prompt
    per member) and can still be evaluated in one batched call. A plain :class:`SDE` needs no
    wrapper: :func:`~coupled_sde.solve` runs it on the flat ``(K * B, *event)`` state of all members.
    """

    n_members: int = 1
