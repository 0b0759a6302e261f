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
================  ===============================  ==============================  ===============

A *coupled system* (:class:`CoupledSDE`) evaluates K members at once on a stacked state
``(K, B, *event)``; any plain :class:`SDE` is lifted to one by flattening ``K * B`` into the batch,
so a coupled solve still makes **one** drift call per stage.
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
    "StackedMembers",
    "as_coupled",
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

    ``brownian_size`` is the number ``m`` of Brownian motions per sample for ``general`` noise.
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
        if nt is NoiseType.GENERAL:
            if not self.brownian_size:
                raise ValueError("an SDE with general noise must declare brownian_size (m)")
            return (int(self.brownian_size),)
        return tuple(event_shape)

    @property
    def is_ode(self) -> bool:
        return self.noise_type is None


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


def apply_diffusion(noise_type: NoiseType, g: Tensor | float, dw: Tensor, n_event: int) -> Tensor:
    """``g dW`` for a state with ``n_event`` event dimensions (see the module table)."""
    if noise_type is NoiseType.GENERAL:
        return (g * dw.reshape(dw.shape[:-1] + (1,) * n_event + dw.shape[-1:])).sum(-1)
    if noise_type is NoiseType.SCALAR:
        return g * dw.reshape(dw.shape + (1,) * n_event)
    return g * dw


class CoupledSDE(SDE):
    """K member processes evaluated together on a stacked state ``(K, B, *event)``.

    Implement this directly when the members differ (e.g. a model conditioned on a different prompt
    per member) and can still be evaluated in one batched call; use :class:`StackedMembers` to run K
    copies of one plain SDE.
    """

    n_members: int = 1


class StackedMembers(CoupledSDE):
    """K copies of one SDE on a stacked state: one call per stage over the flattened ``K * B`` batch."""

    def __init__(self, sde: SDE, n_members: int) -> None:
        self.sde = sde
        self.n_members = int(n_members)
        self.noise_type = sde.noise_type
        self.calculus = sde.calculus
        self.brownian_size = sde.brownian_size
        if sde.noise_type is NoiseType.ADDITIVE:
            # g depends on t only and broadcasts against (K, B, *event) as it does against (B, *event)
            self.diffusion = sde.diffusion

    def drift(self, t: float, y: Tensor) -> Tensor:
        flat = y.flatten(0, 1)
        f = self.sde.drift(t, flat)
        if not isinstance(f, Tensor) or f.shape != flat.shape:
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"the drift returned shape {got} for a state of shape {tuple(flat.shape)}")
        return f.reshape(y.shape)

    def diffusion(self, t: float, y: Tensor) -> Tensor | float:
        g = self.sde.diffusion(t, y.flatten(0, 1))
        # Per-sample diffusions come back with the flattened K * B batch first; additive ones are
        # broadcastable tensors or scalars and are returned as they are.
        if isinstance(g, torch.Tensor) and g.dim() >= y.dim() - 1 and g.shape[0] == y.shape[0] * y.shape[1]:
            return g.reshape(y.shape[:2] + g.shape[1:])
        return g


def as_coupled(system: SDE, n_members: int) -> CoupledSDE:
    """Lift a plain SDE to K stacked members, or check a coupled system's member count."""
    if isinstance(system, CoupledSDE):
        if system.n_members != n_members:
            raise ValueError(f"the system has {system.n_members} members but the initial state stacks {n_members}")
        return system
    return StackedMembers(system, n_members)
