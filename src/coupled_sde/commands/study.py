"""``coupled-sde study``: closed-form studies that need no model.

``coupling``: Gaussian-mixture editing under several couplings (paths and distances over time);
``convergence``: strong orders of Euler–Maruyama, Milstein and Heun on geometric Brownian motion;
``law``: the law of edits -- every method's W2 to the exact target law, mean, covariance and RMS
distance to the source against the optimal-transport bound, at several step counts (docs/law-of-edits.md).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", choices=["coupling", "convergence", "law"], help="which study")
    p.add_argument("--n", type=int, default=2000, help="law: source samples (default 2000)")
    p.add_argument("--variants", action="store_true", help="law: also the sync-SDE variants (Heun, couplings, exact path, eta)")
    p.add_argument("--steps", default="7,14,28,56", help="law: comma-separated step counts, multiples of 7 (default 7,14,28,56)")
    p.add_argument("--out", default="coupled-sde-study", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    import torch

    from ._output import claim_outputs

    if args.which == "law":
        return _run_law(args)
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


def _run_law(args: argparse.Namespace) -> int:
    from ..studies.edit_law import edit_law, law_table, plot_edit_law, save_law_rows
    from ._output import claim_outputs

    try:
        steps = [int(v) for v in str(args.steps).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers, got {args.steps!r}") from None
    if not steps or any(k < 7 or k % 7 for k in steps):
        raise ValueError(f"--steps must be multiples of 7 (edits start at step N/7, sigma 0.95), got {args.steps!r}")
    if args.n < 10:
        raise ValueError(f"--n must be >= 10, got {args.n}")
    png, csv_path = claim_outputs(args.out, ["law_of_edits.png", "law_of_edits.csv"], args.force)
    variants = None
    if args.variants:
        from ..studies.scene_editing import method_parameters
        from ..studies.variants import variant_settings

        variants = {
            name: {k: v for k, v in ss[0].items() if k != "start"}
            for name, ss in variant_settings(method_parameters("sync-sde"), 20, [10], exact_path=True).items()
        }
    rows, floor = edit_law(step_counts=steps, n=args.n, variants=variants)
    print(f"Editing {args.n} samples of class 0 to class 1 of a 2-D Gaussian mixture with exact velocities, from sigma 0.95.")
    print(law_table(rows, floor))
    save_law_rows(rows, csv_path)
    plot_edit_law(rows, png, floor)
    print(f"wrote {png} and {csv_path}")
    return 0
