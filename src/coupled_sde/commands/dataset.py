"""``coupled-sde run``: edit a dataset of (image, source prompt, target prompt) triplets.

Resumable (rerun the same command after an interruption: finished edits are skipped), shardable
(``--shards N --shard-index i``, or one shard per GPU with ``--accelerate`` under ``accelerate
launch -m coupled_sde run --accelerate``; see :mod:`coupled_sde.runs.launch`), with the paper's metrics (``--metrics``). Three other
modes work on a finished run folder: ``--merge DIR`` (shard CSVs into ``results.csv``),
``--summarize DIR`` (mean cost and metrics per method and setting, and the CLIP-vs-LPIPS plot) and
``--evaluate-pie-bench DIR --dataset mapping_file.json`` (PIE-Bench's eight metrics per edit, and
their means per method, setting and edit type). The last is a mode of its own: it refuses
``--model`` / ``--out`` / ``--merge`` / ``--summarize`` (make the run, then evaluate it), and
checks the folder, the dataset, the weight files, the device and the hub before loading a network.

Only the standard library is imported at import time; torch, diffusers and the runner are imported
inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
  coupled-sde run --evaluate-pie-bench runs/pie --dataset PIE-Bench/data/mapping_file.json \\
      --lpips-squeeze squeezenet1_1-b8a52dc0.pth squeeze.pth --device cuda
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``run`` subcommand's options."""
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", help="Hugging Face Hub id or local diffusers pipeline folder")
    parser.add_argument("--dataset", help="JSON/YAML list of triplets (our format, FlowEdit's or PIE-Bench's mapping_file.json)")
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
    m.add_argument(
        "--evaluate-pie-bench",
        metavar="DIR",
        help="score DIR's finished edits with PIE-Bench's metrics (--dataset: its mapping_file.json); "
        "write DIR/pie_bench.csv and DIR/pie_bench_summary.csv (per edit type), print the summary",
    )
    m.add_argument(
        "--pie-metrics",
        choices=("paper", "tiny"),
        default="paper",
        help="paper: the benchmark's networks, on --device (default); tiny: tiny random networks on the CPU, "
        "for smoke tests only (the numbers mean nothing)",
    )
    m.add_argument(
        "--clip-model",
        metavar="ID_OR_PATH",
        help="CLIP for --pie-metrics paper: hub id or local folder (default openai/clip-vit-large-patch14, the script's)",
    )
    m.add_argument(
        "--structure-model",
        metavar="ID_OR_PATH",
        help="DINO ViT for the structure distance: hub id or local folder (default facebook/dino-vitb8)",
    )
    m.add_argument(
        "--lpips-squeeze",
        nargs=2,
        metavar=("SQUEEZENET", "LIN"),
        help="local files: torchvision's squeezenet1_1 weights and lpips' v0.1 squeeze.pth (without: no LPIPS column)",
    )


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


def _check_pie_bench_options(args: argparse.Namespace) -> None:
    """The option errors of ``--evaluate-pie-bench``: other modes, no ``--dataset``, missing weight files."""
    others = [f"--{name}" for name in ("model", "out", "merge", "summarize") if getattr(args, name)]
    if others:
        raise ValueError(
            f"--evaluate-pie-bench works on a finished run and cannot be combined with {', '.join(others)}: "
            "make (and merge) the run first, then evaluate its folder"
        )
    if not args.dataset:
        raise ValueError("--evaluate-pie-bench needs --dataset: PIE-Bench's mapping_file.json")
    for path in args.lpips_squeeze or ():
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"--lpips-squeeze: no such file {path!r}")


def _check_metric_model(name: str, option: str) -> None:
    """A local checkpoint folder must exist; a hub id must be cached or the hub reachable (before any load)."""
    from ._runtime import check_hub_model

    if Path(name).expanduser().exists():
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"{option}: no such folder {name!r}")
    check_hub_model(name, filename="config.json", what=option)


def _pie_metrics(args: argparse.Namespace) -> Any:
    """PIE-Bench's metric networks as chosen by ``--pie-metrics``: the real ones on ``--device`` (default: the
    first available), their hub ids or folders checked first; the tiny ones on the CPU."""
    from coupled_sde.editing.loading import default_device
    from coupled_sde.metrics.pie_bench import PIE_CLIP_MODEL, PieBenchMetrics
    from coupled_sde.metrics.structure import DEFAULT_STRUCTURE_MODEL

    if args.pie_metrics == "tiny":
        return PieBenchMetrics.tiny(0)
    clip, structure = args.clip_model or PIE_CLIP_MODEL, args.structure_model or DEFAULT_STRUCTURE_MODEL
    _check_metric_model(clip, "--clip-model")
    _check_metric_model(structure, "--structure-model")
    if not args.lpips_squeeze:
        print("note: no --lpips-squeeze SQUEEZENET LIN: the lpips_unedit_part column is skipped", file=sys.stderr, flush=True)
    squeezenet, lin = args.lpips_squeeze or (None, None)
    device = args.device or default_device()
    return PieBenchMetrics.from_pretrained(squeezenet, lin, device=device, clip_model=clip, structure_model=structure)


def evaluate_pie_bench_folder(args: argparse.Namespace) -> int:
    """``--evaluate-pie-bench DIR``: score the run's finished edits, print and write the per-edit-type summary.

    Everything that can be checked without a network is checked first (options, files, the
    extra, the device, the run folder against the dataset), so that bad input costs no load.
    """
    from coupled_sde._optional import require

    from ._runtime import check_device

    _check_pie_bench_options(args)
    require("transformers", "metrics")
    check_device(args.device)
    from coupled_sde.runs import evaluate_pie_bench, load_triplets, summarize_pie_bench
    from coupled_sde.runs.pie_bench import scorable_edits

    folder = Path(args.evaluate_pie_bench).expanduser()
    triplets = load_triplets(args.dataset, args.image_root)
    edits = scorable_edits(folder, triplets)
    metrics = _pie_metrics(args)
    print(f"scoring {len(edits)} edit(s) of {folder} ...", file=sys.stderr, flush=True)
    scores = evaluate_pie_bench(folder, triplets, metrics)
    table = summarize_pie_bench(scores)
    print(table)
    summary = table.write_csv(folder / "pie_bench_summary.csv")
    print(f"scores: {scores}")
    print(f"summary: {summary}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Evaluate on PIE-Bench, merge, summarize, or edit (this process's shard of) a dataset."""
    if args.evaluate_pie_bench:
        return evaluate_pie_bench_folder(args)
    if args.merge:
        from coupled_sde.runs import merge_results

        print(f"merged: {merge_results(args.merge)}")
        if not args.summarize:
            return 0
    if args.summarize:
        return summarize_folder(args.summarize, args.plot)
    missing = [f"--{name}" for name in ("model", "dataset", "out") if not getattr(args, name)]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or --summarize DIR / --merge DIR / --evaluate-pie-bench DIR)")
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
