"""``coupled-sde demo``: sync-SDE and every baseline on the shipped digits model, no downloads.

Edits held-out digits to other classes, writes a PNG grid (source, edit, |difference| per method),
a fidelity-vs-preservation plot (one point per hyperparameter setting) and a CSV, and prints the table.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="coupled-sde-demo", help="output folder (default: ./coupled-sde-demo)")
    p.add_argument("--n-edits", type=int, default=60, help="held-out digits to edit (default 60)")
    p.add_argument("--steps", type=int, default=20, help="steps of the full schedule (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of edit i is seed + i (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from ..backends.digits import DigitsBackbone, load_classifier, load_heldout, pixels_to_model
    from ..studies.digits_editing import (
        DEFAULT_SETTINGS,
        pick_edits,
        plot_edit_grid,
        plot_frontier,
        run_comparison,
        save_rows,
        summarize,
    )
    from ._output import claim_outputs

    if args.n_edits < 1 or args.steps < 3:
        raise ValueError("--n-edits must be >= 1 and --steps >= 3")
    grid_png, frontier_png, table_csv = claim_outputs(args.out, ["edits.png", "frontier.png", "results.csv"], args.force)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    backbone, classifier = DigitsBackbone(), load_classifier()
    images, labels = load_heldout()
    x, src, tgt = pick_edits(pixels_to_model(images), labels, args.n_edits, args.seed)
    scale = args.steps / 20
    settings = {
        m: [{k: (round(v * scale) if k in ("start", "n_max") else v) for k, v in s.items()} for s in ss]
        for m, ss in DEFAULT_SETTINGS.items()
    }
    rows, edits = run_comparison(backbone, classifier, x, src, tgt, settings, n_steps=args.steps, seed=args.seed, keep_edits=True)
    middle = {m: edits[(m, json.dumps(ss[1], sort_keys=True))] for m, ss in settings.items()}
    plot_edit_grid(x, middle, tgt, grid_png)
    plot_frontier(rows, frontier_png)
    save_rows(rows, table_csv)
    print(f"Edited {len(x)} held-out digits to other classes ({args.steps}-step schedule, seed {args.seed}).")
    print(summarize(rows))
    print(f"\nwrote {grid_png} (middle setting of each method), {frontier_png} and {table_csv}")
    return 0
