"""Gradients through the reversible Heun method with O(1) memory (Kidger, Foster, Li, Lyons 2021).

The forward pass runs the solve loop without recording a graph and keeps only the final ``(y, z)``.
The backward pass walks the steps in reverse: it reconstructs the previous ``(y, z)`` exactly from the
algebraic inverse of the step (:meth:`~coupled_sde.integrators.ReversibleHeun.unstep`), re-queries
the step's Brownian increment from the source (a pure function of the step), and backpropagates
through that one step with autograd. The gradients are those of the discretised solve (what autograd
through every step would give, up to rounding), the memory is that of one step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["reversible_adjoint"]

Tensor = torch.Tensor


def reversible_adjoint(integ, sys, driver, grid, y0: Tensor, system, params: Sequence[Tensor] | None) -> Tensor:
    """The final state of a reversible-Heun solve, differentiable in ``y0`` and ``params`` by the
    exact reversible backward pass."""
    from .drivers import BrownianDriver, ODEDriver
    from .integrators import ReversibleHeun

    if not isinstance(integ, ReversibleHeun):
        raise ValueError("adjoint=True needs integrator='reversible_heun' (its steps can be inverted exactly)")
    if not isinstance(driver, (BrownianDriver, ODEDriver)):
        raise ValueError("adjoint=True needs Brownian noise (a seed or a source) or none")
    if params is None:
        params = list(system.parameters()) if isinstance(system, torch.nn.Module) else []
    params = [p for p in params if isinstance(p, Tensor) and p.requires_grad]
    return _Reversible.apply(integ, sys, driver, grid, y0, *params)


class _Reversible(torch.autograd.Function):
    @staticmethod
    def forward(ctx, integ, sys, driver, grid, y0, *params):
        steps = grid.steps()
        with torch.no_grad():
            y = y0.detach()
            extra = integ.init_extra(sys, grid[0], y)
            for i, (t, dt) in enumerate(steps):
                sys.step_index, sys.step_time = i, t
                y, extra = integ.step_extra(sys, t, dt, y, extra, driver.step_noise(i, t, dt, y))
        ctx.integ, ctx.sys, ctx.driver, ctx.grid, ctx.n_params = integ, sys, driver, grid, len(params)
        ctx.save_for_backward(y, extra[0], *params)
        return y.clone()

    @staticmethod
    def backward(ctx, grad_y):
        integ, sys, driver, grid = ctx.integ, ctx.sys, ctx.driver, ctx.grid
        y, z, *params = ctx.saved_tensors
        steps = grid.steps()
        t_end = grid[-1]
        with torch.no_grad():
            extra = (z, sys.drift(t_end, z), _g(sys, t_end, z))
        a_y, a_z = grad_y, torch.zeros_like(grad_y)
        a_p = [torch.zeros_like(p) for p in params]
        for i in range(len(steps) - 1, -1, -1):
            t, dt = steps[i]
            noise = driver.step_noise(i, t, dt, y)
            with torch.no_grad():
                y_prev, extra_prev = integ.unstep(sys, t, dt, y, extra, noise)
            with torch.enable_grad():
                yr = y_prev.detach().requires_grad_()
                zr = extra_prev[0].detach().requires_grad_()
                ex = (zr, sys.drift(t, zr), _g(sys, t, zr))
                y1, ex1 = integ.step_extra(sys, t, dt, yr, ex, noise)
                outs, grads = [y1], [a_y]
                if i > 0:  # the first z equals y0: its adjoint flows into y0 below
                    outs.append(ex1[0])
                    grads.append(a_z)
                else:
                    outs.append(ex1[0])
                    grads.append(a_z)
                got = torch.autograd.grad(outs, [yr, zr, *params], grads, allow_unused=True)
            a_y, a_z = got[0], got[1]
            a_p = [acc if g is None else acc + g for acc, g in zip(a_p, got[2:])]
            y, extra = y_prev, extra_prev
        # z_0 = y_0: both adjoints reach the initial state
        return (None, None, None, None, a_y + a_z, *a_p)


def _g(sys, t, y):
    return 0.0 if sys.noise_type is None else sys.diffusion(t, y)
