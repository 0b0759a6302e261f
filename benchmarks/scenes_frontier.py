"""Every editing method on the shipped scene model: fidelity, preservation and realism, with ground truth.

Held-out scenes (texture crops never seen in training) get three kinds of edit -- the object's
shape, its colour, the background texture -- and every method of the registry runs at three
settings matched in model evaluations, with the same per-edit seeds (see
:mod:`coupled_sde.studies.scene_editing` for the measures). ``--variants`` adds the measurements
beyond the paper: sync-SDE with Heun, with other couplings (independent, reflection, correlated),
with the exact forward path, and the eta-family of reverse SDEs when the engine offers ``eta``;
it reports whether any variant's frontier dominates both sync-SDE's and FlowEdit's on all three axes.

    python benchmarks/scenes_frontier.py [--out benchmarks/results/scenes] [--n 96] [--variants]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from coupled_sde.backends.scenes import SceneBackbone, load_scene_classifier
from coupled_sde.studies.scene_editing import (
    ACTIVE_STEPS,
    EDIT_KINDS,
    N_STEPS,
    default_settings,
    make_edits,
    method_names,
    method_parameters,
    plot_scene_edits,
    plot_scene_frontier,
    real_floor,
    run_scene_benchmark,
    save_scene_rows,
    summarize_scenes,
)
from coupled_sde.studies.variants import dominance_report, variant_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/scenes")
    parser.add_argument("--n", type=int, default=96, help="edits per kind (default 96)")
    parser.add_argument("--steps", type=int, default=N_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", action="store_true", help="also run the variants beyond the paper")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    backbone, clf = SceneBackbone(), load_scene_classifier()
    edits = [make_edits(k, args.n, args.seed) for k in EDIT_KINDS]
    floors = {e.kind: real_floor(clf, e) for e in edits}
    settings: dict[str, list[dict[str, Any]]] = {m: default_settings(m, args.steps) for m in method_names()}
    if args.variants:
        settings.update(variant_settings(method_parameters("sync-sde"), args.steps, ACTIVE_STEPS))
    t0 = time.perf_counter()
    rows, kept = run_scene_benchmark(
        backbone, clf, edits, settings, n_steps=args.steps, seed=args.seed, keep_edits=True, progress=print
    )
    print(
        f"\n{args.n} edits per kind on held-out scenes, {args.steps}-step schedule, seed {args.seed} ({time.perf_counter() - t0:.0f} s)"
    )
    table = summarize_scenes(rows, floors)
    print(table)
    save_scene_rows(rows, out / "results.csv")
    (out / "floors.json").write_text(json.dumps(floors, indent=2) + "\n")
    main_rows = [r for r in rows if r.method in method_names()]
    plot_scene_frontier(main_rows, out / "frontier.png", f"{args.n} held-out edits per kind, {args.steps} steps")
    for e in edits:
        middle = {
            m: kept[(e.kind, m, json.dumps(ss[len(ss) // 2], sort_keys=True))]
            for m, ss in settings.items()
            if m in method_names()
        }
        plot_scene_edits(e, middle, out / f"edits_{e.kind}.png", title=f"{e.kind} edits (middle setting of each method)")
    if args.variants:
        plot_scene_frontier(rows, out / "frontier_variants.png", "sync-SDE variants against the methods")
        report = dominance_report(rows, ["sync-sde", "flowedit"])
        print("\n" + report)
        (out / "dominance.txt").write_text(report + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
