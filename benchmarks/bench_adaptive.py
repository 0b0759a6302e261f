"""Adaptive vs fixed steps: error at equal drift evaluations, on one Brownian path per problem.

Heun on two problems, each driven by one ``IntervalBrownian`` path (adaptive steps re-query it over
rejected and shorter intervals; fixed grids query the same path on their grid), with the exact
solution of that path as the reference:

* **stiff-ish OU** ``dX = 30 (0.5 − X) dt + 0.1 dW`` from ``X₀ = 5`` (a fast transient, then noise):
  the error over the trajectory, ``max`` over 16 save times, mean over 16 paths; the exact solution of
  the piecewise-linear path on ``2^12`` steps is the reference;
* **GBM** (Stratonovich) ``dX = X dt + 0.5 X dW``: the final error, mean over 64 paths, against
  ``X₀ exp(T + 0.5 W_T)``.

Prints drift evaluations and errors for fixed grids and for a range of tolerances, and with
``--plot PATH`` draws error against drift evaluations (the figure of docs/tutorials/study-convergence.md).

    python benchmarks/bench_adaptive.py [--plot docs/images/adaptive_vs_fixed.png]
"""

from __future__ import annotations

import argparse

import torch

from coupled_sde import IntervalBrownian, PIController, TimeGrid, solve
from coupled_sde.problems import GeometricBrownianMotion, OrnsteinUhlenbeck

F64 = torch.float64


def stiff_ou():
    B = 16
    ou = OrnsteinUhlenbeck(theta=30.0, mu=0.5, sigma=0.1)
    x0 = torch.full((B, 1), 5.0, dtype=F64)
    src = IntervalBrownian(0.0, 1.0, B, (1,), seed=1, dtype=F64)
    fine = TimeGrid.uniform(0, 1, 2**12)
    save = [k / 16 for k in range(1, 17)]
    ref = ou.solution(x0, fine, src.on_grid(fine)[0])[[fine.index(t) for t in save]]

    def err(sol):
        return float((sol.ys - ref).abs().amax(0).mean())

    fixed = [
        (s.n_drift_evals, err(s))
        for n in (32, 64, 128, 256, 512)
        for s in [solve(ou, x0, TimeGrid.uniform(0, 1, n), "heun", noise=src, save_at=save)]
    ]
    adaptive = []
    for rtol in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3):
        s = solve(
            ou,
            x0,
            TimeGrid([0.0, 1.0 / 64, 1.0]),
            "heun",
            noise=src,
            save_at=save,
            adaptive=PIController(rtol=rtol, atol=rtol * 1e-2),
        )
        adaptive.append((s.n_drift_evals, err(s), rtol, s.n_accepted, s.n_rejected))
    return fixed, adaptive


def gbm():
    B = 64
    p = GeometricBrownianMotion(mu=1.0, sigma=0.5, calculus="stratonovich")
    x0 = torch.ones(B, 1, dtype=F64)
    src = IntervalBrownian(0.0, 1.0, B, (1,), seed=2, dtype=F64)
    exact = x0 * torch.exp(1.0 + 0.5 * src.increment(0.0, 1.0)[0])
    fixed = [
        (s.n_drift_evals, float((s.y - exact).abs().mean()))
        for n in (8, 16, 32, 64, 128, 256)
        for s in [solve(p, x0, TimeGrid.uniform(0, 1, n), "heun", noise=src)]
    ]
    adaptive = []
    for rtol in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3):
        s = solve(p, x0, TimeGrid([0.0, 0.1, 1.0]), "heun", noise=src, adaptive=PIController(rtol=rtol, atol=rtol * 1e-2))
        adaptive.append((s.n_drift_evals, float((s.y - exact).abs().mean()), rtol, s.n_accepted, s.n_rejected))
    return fixed, adaptive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {"stiff-ish OU (trajectory error)": stiff_ou(), "GBM (final error)": gbm()}
    for name, (fixed, adaptive) in results.items():
        print(name)
        for ev, e in fixed:
            print(f"  fixed      {ev:6d} drift evaluations   error {e:.3e}")
        for ev, e, rtol, acc, rej in adaptive:
            print(f"  adaptive   {ev:6d} drift evaluations   error {e:.3e}   (rtol {rtol:g}: {acc} accepted, {rej} rejected)")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, (name, (fixed, adaptive)) in zip(axes, results.items()):
            ax.loglog(*zip(*fixed), "o-", label="fixed steps")
            ax.loglog([a[0] for a in adaptive], [a[1] for a in adaptive], "s-", label="adaptive (PI controller)")
            ax.set_xlabel("drift evaluations")
            ax.set_ylabel("error")
            ax.set_title(f"Heun, {name}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
