"""torchsde's test problems: strong orders and wall time, coupled_sde vs torchsde, on the same Brownian paths.

The four problems of torchsde's ``tests/problems.py`` (Ex1 diagonal, Ex2 scalar, Ex3 additive with a
time-dependent ``(d, m)`` diffusion, Ex4 general noise: small softplus/sigmoid networks of ``(t, y)``)
are rebuilt here with the same architecture and seeded weights, and every method both libraries
have is run on each problem it supports:

* **orders** -- one ``torchsde.BrownianInterval`` per problem drives torchsde's ``sdeint``; the
  same path, queried on our grid, drives ``coupled_sde.solve`` (a ``RecordedBrownian``; SRA1 gets
  the space-time Lévy area of the same interval). The strong error at ``h = 2^-2 ... 2^-6`` is taken
  against the same method on ``2^-10`` (self-convergence: these problems have no closed form), and
  the order is the least-squares slope;
* **wall time** -- the median of ``--repeats`` runs at 200 steps, batch 1024, one thread: torchsde
  with its ``BrownianInterval`` (``dt`` hint) against ``solve`` with an integer seed.

    python benchmarks/bench_torchsde_problems.py [--repeats 5] [--batch 256]

Ratios, not absolute times, are what to compare across machines.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torchsde
from torch import nn

from coupled_sde import IntervalBrownian, Milstein, RecordedBrownian, TimeGrid, solve
from coupled_sde.sde import SDE, Calculus, NoiseType
from coupled_sde.studies import fit_order

D, M = 3, 2
F64 = torch.float64


def _net(inp: int, out: int, sigmoid: bool) -> nn.Sequential:
    layers = [nn.Linear(inp, 3), nn.Softplus(), nn.Linear(3, out)]
    return nn.Sequential(*layers, nn.Sigmoid()) if sigmoid else nn.Sequential(*layers)


class Problem(nn.Module):
    """One of torchsde's Ex1-Ex4, with both libraries' interfaces."""

    def __init__(self, kind: str, sde_type: str, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.kind, self.sde_type = kind, sde_type
        self.noise_type = {"ex1": "diagonal", "ex2": "scalar", "ex3": "additive", "ex4": "general"}[kind]
        self.f_net = _net(D + 1, D, False)
        g_in = 1 if kind == "ex3" else D + 1
        g_out = D * M if kind in ("ex3", "ex4") else D
        self.g_net = _net(g_in, g_out, True)
        self.double()

    # torchsde interface: t a 0-d tensor, y (B, d)
    def f(self, t, y):
        return self.f_net(torch.cat([t.expand(y.size(0), 1), y], 1))

    def g(self, t, y):
        if self.kind == "ex3":
            return self.g_net(t.expand(y.size(0), 1)).view(y.size(0), D, M)
        out = self.g_net(torch.cat([t.expand(y.size(0), 1), y], 1))
        if self.kind == "ex4":
            return out.view(y.size(0), D, M)
        return out.unsqueeze(-1) if self.kind == "ex2" else out


class Ours(SDE):
    """The same problem as a coupled_sde SDE (t a float)."""

    def __init__(self, p: Problem) -> None:
        self.p = p
        self.calculus = Calculus(p.sde_type)
        self.noise_type = NoiseType(p.noise_type)
        self.brownian_size = M if p.kind in ("ex3", "ex4") else None

    def drift(self, t, y):
        return self.p.f(torch.tensor(t, dtype=y.dtype), y)

    def diffusion(self, t, y):
        g = self.p.g(torch.tensor(t, dtype=y.dtype), y)
        return g.squeeze(-1) if self.p.kind == "ex2" else g


#: (our name, torchsde method, calculus, problems)
METHODS = [
    ("euler", "euler", "ito", ("ex1", "ex2", "ex3", "ex4")),
    ("milstein", "milstein", "ito", ("ex1", "ex2")),
    ("heun", "heun", "stratonovich", ("ex1", "ex2", "ex3")),
    ("sra1", "srk", "ito", ("ex3",)),
    ("reversible_heun", "reversible_heun", "stratonovich", ("ex1", "ex2", "ex3", "ex4")),
]


def _noise_shape(kind: str, batch: int) -> tuple[int, ...]:
    return (batch,) if kind == "ex2" else (batch, M) if kind in ("ex3", "ex4") else (batch, D)


def orders(kind, ours_name, ts_method, sde_type, batch, levels=(2, 3, 4, 5, 6), ref_level=10):
    p = Problem(kind, sde_type)
    y0 = torch.full((batch, D), 0.1, dtype=F64)
    shape = _noise_shape(kind, batch)
    bm_shape = (batch, 1) if kind == "ex2" else shape
    bm = torchsde.BrownianInterval(
        0.0, 1.0, bm_shape, dtype=F64, entropy=11, levy_area_approximation="space-time", dt=2.0**-ref_level, cache_size=None
    )
    src = IntervalBrownian.wrap(bm)
    integ = Milstein(derivative="jvp") if ours_name == "milstein" else ours_name

    def run_ours(level):
        grid = TimeGrid.uniform(0.0, 1.0, 2**level)
        noise = src if ours_name == "sra1" else RecordedBrownian(grid, src.on_grid(grid))
        if kind == "ex2":  # our scalar noise: one Brownian motion per sample, shape (S, B)
            noise = RecordedBrownian(grid, src.on_grid(grid)[..., 0])
        with torch.no_grad():
            return solve(Ours(p), y0, grid, integ, noise=noise).y

    def run_theirs(level):
        with torch.no_grad():
            return torchsde.sdeint(p, y0, torch.tensor([0.0, 1.0], dtype=F64), bm=bm, method=ts_method, dt=2.0**-level)[-1]

    out = {}
    for name, fn in (("ours", run_ours), ("torchsde", run_theirs)):
        ref = fn(ref_level)
        errs = [float((fn(lv) - ref).norm(dim=1).mean()) for lv in levels]
        out[name] = fit_order([2.0**-lv for lv in levels], errs)[0]
    same_path = float((run_ours(levels[-1]) - run_theirs(levels[-1])).abs().max())
    return out["ours"], out["torchsde"], same_path


def timing(kind, ours_name, ts_method, sde_type, batch, repeats, n=200):
    p = Problem(kind, sde_type).float()
    y0 = torch.full((batch, D), 0.1)
    grid = TimeGrid.uniform(0.0, 1.0, n)
    bm_shape = (batch, 1) if kind == "ex2" else _noise_shape(kind, batch)
    levy = "space-time" if ts_method == "srk" else "none"
    ours_integ = Milstein() if ours_name == "milstein" else ours_name

    def theirs():
        bm = torchsde.BrownianInterval(0.0, 1.0, bm_shape, dt=1.0 / n, entropy=3, levy_area_approximation=levy)
        with torch.no_grad():
            torchsde.sdeint(p, y0, torch.tensor([0.0, 1.0]), bm=bm, method=ts_method, dt=1.0 / n)

    def ours():
        with torch.no_grad():
            solve(Ours(p), y0, grid, ours_integ, noise=3)

    # interleaved repeats: a busy machine slows both alike, so the ratio of medians stays meaningful
    res = {"torchsde": [], "ours": []}
    theirs(), ours()
    for _ in range(repeats):
        for name, fn in (("torchsde", theirs), ("ours", ours)):
            t0 = time.perf_counter()
            fn()
            res[name].append(time.perf_counter() - t0)
    return statistics.median(res["ours"]), statistics.median(res["torchsde"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128, help="paths for the order fits")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--no-orders", action="store_true", help="timings only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torchsde {torchsde.__version__}; one thread; orders from h = 2^-2..2^-6 against 2^-10, {args.batch} paths")
    print(
        f"{'problem':<8}{'method':<17}{'order ours':>11}{'torchsde':>10}{'max |diff| same path':>22}"
        + ("" if args.no_timing else f"{'ours ms':>10}{'torchsde ms':>12}{'ratio':>7}")
    )
    for ours_name, ts_method, sde_type, kinds in METHODS:
        for kind in kinds:
            o, t, diff = (math.nan,) * 3 if args.no_orders else orders(kind, ours_name, ts_method, sde_type, args.batch)
            row = f"{kind:<8}{ours_name:<17}{o:>11.3f}{t:>10.3f}{diff:>22.2e}"
            if not args.no_timing:
                a, b = timing(kind, ours_name, ts_method, sde_type, 1024, args.repeats)
                row += f"{a * 1e3:>10.1f}{b * 1e3:>12.1f}{a / b:>7.2f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
