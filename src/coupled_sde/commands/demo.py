"""``coupled-sde demo``: sync-SDE and every baseline on a shipped model, offline.

``--model scenes`` (default): held-out 32x32 scenes (a coloured shape over a natural texture) get
three kinds of edit with known ground truth -- shape, colour, texture -- by every method of the
registry at three settings; writes one picture per kind (sources, ground truth, each method's edit
and its difference map with a colour scale), the frontier plots (fidelity against preservation and
against realism) and a CSV, and prints the table. ``--model digits``: the 8x8 digits demo.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["scenes", "digits"], default="scenes", help="shipped model (default: scenes)")
    p.add_argument("--out", default="coupled-sde-demo", help="output folder (default: ./coupled-sde-demo)")
    p.add_argument(
        "--n-edits",
        type=int,
        default=None,
        help="edits (scenes: per kind, default 8, at most 512; digits: default 60, at most 360)",
    )
    p.add_argument("--steps", type=int, default=20, help="steps of the full schedule (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of edit i is seed + i (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


#: Most edits per kind the scene demo accepts (a demo, not a benchmark: see benchmarks/scenes_frontier.py).
MAX_SCENE_EDITS = 512


def _check(args: argparse.Namespace, n_max: int) -> int:
    n = args.n_edits
    if n < 1 or n > n_max:
        raise ValueError(f"--n-edits must be between 1 and {n_max} for the {args.model} model, got {n}")
    if args.steps < 3:
        raise ValueError(f"--steps must be >= 3, got {args.steps}")
    return n


def run(args: argparse.Namespace) -> int:
    if args.model == "digits":
        return _run_digits(args)
    return _run_scenes(args)


def _run_scenes(args: argparse.Namespace) -> int:
    import json

    import torch

    if args.n_edits is None:
        args.n_edits = 8
    n = _check(args, MAX_SCENE_EDITS)
    from ..backends.scenes import SceneBackbone, load_scene_classifier
    from ..studies.scene_editing import (
        EDIT_KINDS,
        default_settings,
        make_edits,
        method_names,
        plot_scene_edits,
        plot_scene_frontier,
        real_floor,
        run_scene_benchmark,
        save_scene_rows,
        scaled_active_steps,
        summarize_scenes,
    )
    from ._output import claim_outputs

    names = [f"edits_{k}.png" for k in EDIT_KINDS] + ["frontier.png", "results.csv"]
    paths = claim_outputs(args.out, names, args.force)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    backbone, classifier = SceneBackbone(), load_scene_classifier()
    edits = [make_edits(k, n, args.seed) for k in EDIT_KINDS]
    active = scaled_active_steps(args.steps)
    settings = {m: default_settings(m, args.steps, active) for m in method_names()}
    rows, kept = run_scene_benchmark(backbone, classifier, edits, settings, n_steps=args.steps, seed=args.seed, keep_edits=True)
    for e, png in zip(edits, paths):
        middle = {m: kept[(e.kind, m, json.dumps(ss[len(ss) // 2], sort_keys=True))] for m, ss in settings.items()}
        plot_scene_edits(
            e, middle, png, title=f"{e.kind} edits, middle setting of each method ({args.steps} steps, seed {args.seed})"
        )
    plot_scene_frontier(rows, paths[-2], f"{n} held-out edits per kind, {args.steps} steps")
    save_scene_rows(rows, paths[-1])
    floors = {e.kind: real_floor(classifier, e) for e in edits}
    print(f"Edited {n} held-out scenes per kind (shape, colour, texture), {args.steps}-step schedule, seed {args.seed}.")
    print(summarize_scenes(rows, floors))
    print(
        "\nP(tgt): classifier's probability of the target value; kept: both unedited attributes still recognised; "
        "PSNR/SSIM/feat: outside the edited region; PSNRgt: against the ground-truth edit; FD: Fréchet distance to "
        "real scenes with the target attributes."
    )
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def _run_digits(args: argparse.Namespace) -> int:
    import json

    import torch

    from ..backends.digits import DigitsBackbone, load_classifier, load_heldout, pixels_to_model
    from ..studies.digits_editing import (
        pick_edits,
        plot_edit_grid,
        plot_frontier,
        reference_digits,
        run_comparison,
        save_rows,
        scaled_settings,
        summarize,
    )
    from ._output import claim_outputs

    if args.n_edits is None:
        args.n_edits = 60
    images, labels = load_heldout()
    n = _check(args, len(labels))
    grid_png, frontier_png, table_csv = claim_outputs(args.out, ["edits.png", "frontier.png", "results.csv"], args.force)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    backbone, classifier = DigitsBackbone(), load_classifier()
    pixels = pixels_to_model(images)
    x, src, tgt = pick_edits(pixels, labels, n, args.seed)
    settings = scaled_settings(args.steps)
    reference = reference_digits(pixels, labels, tgt, args.seed) if n >= 2 else None
    rows, edits = run_comparison(
        backbone, classifier, x, src, tgt, settings, n_steps=args.steps, seed=args.seed, keep_edits=True, reference=reference
    )
    middle = {m: edits[(m, json.dumps(ss[len(ss) // 2], sort_keys=True))] for m, ss in settings.items()}
    plot_edit_grid(x, middle, tgt, grid_png)
    plot_frontier(rows, frontier_png)
    save_rows(rows, table_csv)
    print(f"Edited {len(x)} held-out digits to other classes ({args.steps}-step schedule, seed {args.seed}).")
    print(summarize(rows))
    print("FD: Fréchet distance in the classifier's features to held-out digits of the target classes (needs 2+ edits).")
    print(f"\nwrote {grid_png} (middle setting of each method), {frontier_png} and {table_csv}")
    return 0
