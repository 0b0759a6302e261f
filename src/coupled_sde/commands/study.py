"""``coupled-sde study``: closed-form studies that need no model.

``coupling``: Gaussian-mixture editing under several couplings (paths and distances over time);
``convergence``: strong orders of Euler–Maruyama, Milstein and Heun on geometric Brownian motion.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", choices=["coupling", "convergence"], help="which study")
    p.add_argument("--out", default="coupled-sde-study", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    import torch

    from ._output import claim_outputs

    if args.which == "coupling":
        from ..studies.gaussian_coupling import coupled_paths, plot_coupled_paths

        (png,) = claim_outputs(args.out, ["coupled_paths.png"], args.force)
        study = coupled_paths()
        print(
            f"target class: mean {[round(v, 3) for v in study['target_mean'].tolist()]}, std {[round(v, 3) for v in study['target_std'].tolist()]}"
        )
        for name, r in study["runs"].items():
            print(
                f"{name:<12} edit mean {[round(v, 3) for v in r['mean'].tolist()]}  std {[round(v, 3) for v in r['std'].tolist()]}  corr(source, edit) {r['corr']:.3f}"
            )
        plot_coupled_paths(study, png)
        print(f"wrote {png}")
        return 0

    from ..grid import TimeGrid
    from ..problems import GeometricBrownianMotion
    from ..studies import plot_convergence, strong_convergence

    (png,) = claim_outputs(args.out, ["strong_order_gbm.png"], args.force)
    y0 = torch.ones(2000, 1, dtype=torch.float64)
    results = []
    for integrator, calculus in (("euler", "ito"), ("milstein", "ito"), ("heun", "stratonovich")):
        gbm = GeometricBrownianMotion(0.5, 0.8, calculus)
        r = strong_convergence(
            gbm, y0, TimeGrid.uniform(0, 1, 8), integrator, reference=lambda g, inc, gbm=gbm: gbm.solution(y0, g, inc)[-1]
        )
        print(r.table())
        results.append(r)
    plot_convergence(results, png, "strong convergence on geometric Brownian motion")
    print(f"wrote {png}")
    return 0
