"""Gradients through solve: autograd through every integrator (gradcheck in float64), and the
reversible Heun method's O(1)-memory backward pass against autograd."""

import pytest
import torch

from coupled_sde import Calculus, NoiseType, TimeGrid, solve
from coupled_sde.sde import SDE, FunctionSDE

F64 = torch.float64
GRID = TimeGrid.uniform(0.0, 1.0, 6)


@pytest.mark.parametrize(
    "integrator, noise_type",
    [
        ("euler", "diagonal"),
        ("euler", "general"),
        ("heun", "diagonal"),
        ("milstein", "diagonal"),
        ("milstein", "scalar"),
        ("sra1", "additive"),
        ("reversible_heun", "diagonal"),
    ],
)
def test_gradcheck_through_every_integrator(integrator, noise_type):
    calculus = "stratonovich" if "heun" in integrator else "ito"
    y0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    sigma = torch.tensor(0.4, dtype=F64, requires_grad=True)

    def run(y0, theta, sigma):
        f = lambda t, y: -theta * torch.sin(y) + t  # noqa: E731
        g = {
            "diagonal": lambda t, y: sigma * torch.cos(y),
            "scalar": lambda t, y: sigma * torch.cos(y),
            "additive": lambda t, y: sigma * (1 + t),
            "general": lambda t, y: sigma * torch.stack([torch.cos(y), torch.sin(y), y], -1),
        }[noise_type]
        sde = FunctionSDE(f, g, noise_type=noise_type, calculus=calculus, brownian_size=3 if noise_type == "general" else None)
        return solve(sde, y0, GRID, integrator, noise=3).y

    assert torch.autograd.gradcheck(run, (y0, theta, sigma))


class _Neural(torch.nn.Module, SDE):
    noise_type, calculus, brownian_size = NoiseType.DIAGONAL, Calculus.STRATONOVICH, None

    def __init__(self):
        torch.nn.Module.__init__(self)
        gen = torch.Generator().manual_seed(1)
        self.w = torch.nn.Parameter(torch.randn(2, 2, dtype=F64, generator=gen) * 0.5)
        self.b = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))

    def drift(self, t, y):
        return torch.tanh(y @ self.w) - 0.5 * y + t

    def diffusion(self, t, y):
        return self.b * torch.sin(y)


def test_reversible_heun_adjoint_equals_autograd_with_o1_memory():
    sde = _Neural()
    grid = TimeGrid.uniform(0.0, 1.0, 200)
    y0 = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    plain = solve(sde, y0, grid, "reversible_heun", noise=5).y
    adj = solve(sde, y0, grid, "reversible_heun", noise=5, adjoint=True).y
    assert torch.equal(plain, adj)
    ga = torch.autograd.grad((plain**2).sum(), [y0, sde.w, sde.b])
    gb = torch.autograd.grad((adj**2).sum(), [y0, sde.w, sde.b])
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10)
    # O(1) memory: the adjoint's graph does not grow with the number of steps; autograd's does
    short = solve(sde, y0, TimeGrid.uniform(0.0, 1.0, 20), "reversible_heun", noise=5, adjoint=True).y
    assert _graph_size(adj) == _graph_size(short) < 10
    assert _graph_size(plain) > 100 * _graph_size(adj)


def _graph_size(t):
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions)
    return len(seen)


def test_adjoint_needs_reversible_heun():
    with pytest.raises(ValueError, match="reversible_heun"):
        solve(_Neural(), torch.zeros(2, 2, dtype=F64), GRID, "heun", noise=0, adjoint=True)
