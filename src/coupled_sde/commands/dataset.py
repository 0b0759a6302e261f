"""``coupled-sde run``: edit a dataset of (image, source prompt, target prompt) triplets.

Resumable (rerun the same command after an interruption: finished edits are skipped), shardable
(``--shards N --shard-index i``, or one shard per GPU with ``--accelerate`` under ``accelerate
launch -m coupled_sde run --accelerate``; see :mod:`coupled_sde.runs.launch`), with the paper's metrics (``--metrics``). Two other
modes work on a finished run folder: ``--merge DIR`` (shard CSVs into ``results.csv``) and
``--summarize DIR`` (mean cost and metrics per method and setting, and the CLIP-vs-LPIPS plot).

Only the standard library is imported at import time; torch, diffusers and the runner are imported
inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_EPILOG = """\
dataset formats (JSON or YAML):
  [{"image": "cat.png", "source_prompt": "...", "target_prompt": "...", "mask": "optional.png"}]
  FlowEdit's edits.yaml / Data/flowedit.yaml (input_img or init_img, source_prompt, target_prompts, target_codes)
settings (JSON/YAML file or inline JSON):
  '[{"start": 2}, {"start": 4}]'   or a grid '{"start": [2, 4, 6]}'   or per method
  '{"sync-sde": {"start": [2, 4, 6]}, "flowedit": {"n_max": [20, 24]}}'

examples:
  coupled-sde run --model black-forest-labs/FLUX.1-dev --dataset Data/flowedit.yaml --out runs/flux \\
      --methods sync-sde,flowedit --settings settings.json --metrics --lpips-weights vgg16-397923af.pth vgg.pth
  coupled-sde run --summarize runs/flux
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``run`` subcommand's options."""
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", help="Hugging Face Hub id or local diffusers pipeline folder")
    parser.add_argument("--dataset", help="JSON/YAML list of triplets (our format or FlowEdit's)")
    parser.add_argument("--out", help="output folder: images/, results.csv (resumes if it exists)")
    parser.add_argument(
        "--methods", default="sync-sde", help="comma-separated registered methods (default: sync-sde): sync-sde, flowedit, sdedit, ode-inversion, ..."
    )
    parser.add_argument(
        "--settings", help="settings file or inline JSON (list, grid or per method); default: each method's defaults"
    )
    parser.add_argument("--seed", default="0", help="a seed or comma-separated seeds, each edit made once per seed (default 0)")
    parser.add_argument(
        "--metrics",
        nargs="?",
        const="paper",
        choices=("paper", "pixel", "tiny"),
        help="score every edit: paper (CLIP, LPIPS, DINO, L1; the default when given alone), pixel (L1 only), tiny (smoke tests)",
    )
    parser.add_argument("--lpips-weights", nargs=2, metavar=("VGG", "LIN"), help="LPIPS weight files for --metrics paper")
    parser.add_argument("--image-root", help="folder to look for the dataset's images in (besides the dataset's folder)")
    parser.add_argument("--resize", action="store_true", help="resize images to the nearest size the model takes")
    s = parser.add_argument_group("scale-out")
    s.add_argument("--shards", type=int, default=1, help="split the triplets into N shards (every N-th triplet)")
    s.add_argument("--shard-index", type=int, default=0, help="which shard this process runs (0..N-1)")
    s.add_argument(
        "--accelerate", action="store_true", help="one shard per process of `accelerate launch` (shard = process index)"
    )
    r = parser.add_argument_group("runtime")
    r.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: first available / accelerate's)")
    r.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    r.add_argument("--offload", action="store_true", help="CPU offloading of the model components")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    m = parser.add_argument_group("finished runs")
    m.add_argument(
        "--summarize",
        metavar="DIR",
        help="print mean cost and metrics per method and setting; write summary.csv and frontier.png",
    )
    m.add_argument("--merge", metavar="DIR", help="merge DIR/results.shard*.csv into DIR/results.csv")
    m.add_argument("--plot", metavar="PATH", help="where --summarize writes the CLIP-vs-LPIPS plot (default DIR/frontier.png)")


def _methods(text: str) -> list[str]:
    from coupled_sde.editing.registry import method_names

    methods, known = [m.strip() for m in text.split(",") if m.strip()], method_names()
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or text!r}; choose from {', '.join(known)}")
    return list(dict.fromkeys(methods))


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seed must be an integer or comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ValueError("--seed is empty")
    return list(dict.fromkeys(seeds))


def summarize_folder(folder: str, plot: str | None = None) -> int:
    """Print the summary of a run folder, write ``summary.csv`` and the frontier plot (if metrics)."""
    from coupled_sde.runs import plot_frontier, summarize

    table = summarize(folder)
    print(table)
    path = table.write_csv(Path(folder) / "summary.csv")
    print(f"summary: {path}")
    try:
        figure = plot_frontier(table, plot or Path(folder) / "frontier.png")
    except ValueError as e:
        print(f"no plot: {e}")
    else:
        print(f"plot: {figure}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Merge, summarize, or edit (this process's shard of) a dataset."""
    if args.merge:
        from coupled_sde.runs import merge_results

        print(f"merged: {merge_results(args.merge)}")
        if not args.summarize:
            return 0
    if args.summarize:
        return summarize_folder(args.summarize, args.plot)
    missing = [f"--{name}" for name in ("model", "dataset", "out") if not getattr(args, name)]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or --summarize DIR / --merge DIR)")
    methods, seeds = _methods(args.methods), _seeds(args.seed)
    if args.metrics == "paper" and not args.lpips_weights:
        raise ValueError("--metrics paper needs --lpips-weights VGG LIN (or use --metrics pixel)")

    from coupled_sde._optional import require

    require("diffusers", "diffusers")
    require("transformers", "diffusers")
    from coupled_sde.runs import load_settings, load_triplets, merge_results, run_dataset

    triplets = load_triplets(args.dataset, args.image_root)
    load_settings(args.settings, methods)  # a bad settings file fails before any process waits on another

    state, shards, index, device = None, args.shards, args.shard_index, args.device
    if args.accelerate:
        from coupled_sde.runs.launch import partial_state

        state = partial_state(args.device)
        shards, index = state.num_processes, state.process_index
        device = args.device or str(state.device)
    main_process = index == 0 if state is None else state.is_main_process
    prefix = f"[shard {index}/{shards}] " if shards > 1 else ""

    report = run_dataset(
        args.model,
        triplets,
        args.out,
        methods=methods,
        settings=args.settings,
        seeds=seeds,
        metrics=args.metrics,
        lpips_weights=args.lpips_weights,
        shards=shards,
        shard_index=index,
        resize=args.resize,
        device=device,
        dtype=args.dtype,
        offload=args.offload,
        progress=not args.quiet and main_process,
        log=lambda message: print(prefix + message, file=sys.stderr, flush=True),
    )
    print(prefix + str(report), flush=True)
    if state is not None:
        state.wait_for_everyone()
        if state.is_main_process and shards > 1:
            print(f"merged: {merge_results(args.out)}", flush=True)
    if main_process and (state is not None or shards == 1):
        summarize_folder(args.out)
    return 1 if report.failed else 0
