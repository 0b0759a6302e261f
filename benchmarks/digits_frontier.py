"""sync-SDE against SDEdit, ODE inversion and FlowEdit on the shipped digits model, at scale.

Every held-out digit (360, never seen in training) is edited to a random other class by every method
at three settings, with the same per-edit seed across methods. Fidelity is the shipped classifier's
probability of the target class (↑); preservation is the L1 / L2 pixel distance to the source (↓);
realism is the Fréchet distance in the classifier's features between the edits and held-out digits
of the target classes (↓; ``floor``: the same distance between two such real sets).
Writes ``results.csv`` and ``frontier.png`` and prints the table.

    python benchmarks/digits_frontier.py [--out benchmarks/results/digits] [--n 360] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from coupled_sde.backends.digits import DigitsBackbone, load_classifier, load_heldout, pixels_to_model
from coupled_sde.studies.digits_editing import (
    DEFAULT_SETTINGS,
    digit_features,
    pick_edits,
    plot_frontier,
    reference_digits,
    run_comparison,
    save_rows,
    summarize,
)
from coupled_sde.studies.scene_metrics import frechet_distance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/digits")
    parser.add_argument("--n", type=int, default=360, help="edits (default: all 360 held-out digits)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_heldout()
    pixels = pixels_to_model(images)
    x, src, tgt = pick_edits(pixels, labels, args.n, args.seed)
    clf = load_classifier()
    reference = reference_digits(pixels, labels, tgt, args.seed)
    floor = frechet_distance(digit_features(clf, reference_digits(pixels, labels, tgt, args.seed + 1)), digit_features(clf, reference))
    t0 = time.perf_counter()
    rows, _ = run_comparison(
        DigitsBackbone(), clf, x, src, tgt, DEFAULT_SETTINGS, n_steps=args.steps, seed=args.seed, reference=reference
    )
    print(
        f"{args.n} edits of held-out digits to a random other class, {args.steps}-step schedule, seed {args.seed} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    print(summarize(rows))
    print(f"Fréchet floor (two draws of real held-out digits with the target classes): {floor:.2f}")
    save_rows(rows, out / "results.csv")
    plot_frontier(rows, out / "frontier.png")
    print(f"wrote {out / 'results.csv'} and {out / 'frontier.png'}")


if __name__ == "__main__":
    main()
