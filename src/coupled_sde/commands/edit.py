"""``coupled-sde edit``: edit one image with FLUX.1 or Stable Diffusion from the command line.

Everything that can fail cheaply is checked before the model is loaded (minutes and tens of GB
for FLUX.1-dev): the output file (never overwritten without ``--force``), the ``diffusers`` extra,
the model folder and its pipeline class, the image, its size and the mask.

This module imports only the standard library at import time (``coupled-sde --help`` stays fast);
torch, diffusers and the editing code are imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
import time

_EPILOG = """\
defaults per model (override any of them):
  FLUX.1   sync-sde: --steps 28 --start 4 --guidance 1.0 (source guidance = guidance)
           flowedit: --steps 28 --start 4 (n_max 24) --source-guidance 1.5 --guidance 5.5
           sdedit, ode-inversion: --steps 28 --start 4 --guidance 1.0
  SD 1.x/2.x  sync-sde, sdedit: --steps 50 --start 10 --guidance 7.5 (CFG)
           ode-inversion: the same with --source-guidance 1.0 (DDIM inversion); flowedit: its DDIM form

any other setting of a method: --set NAME=VALUE (repeatable), e.g. rf-inversion's gamma, eta_stop,
  eta_decay_power, ode-inversion's share_values (their settings: docs/cli.md)

examples:
  coupled-sde edit --model black-forest-labs/FLUX.1-dev --image cat.png \\
      --source-prompt "a photo of a cat on a sofa" --target-prompt "a photo of a dog on a sofa" --out dog.png
  # RF-Solver-Edit: RF-Solver inversion from pure noise, feature sharing in the first 5 steps
  coupled-sde edit --model black-forest-labs/FLUX.1-dev --image cat.png --source-prompt "..." --target-prompt "..." \\
      --out dog.png --method ode-inversion --integrator rf-solver --start 0 --steps 30 --guidance 2 \\
      --source-guidance 1 --set share_values=5
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``edit`` subcommand's options."""
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model", required=True, help="Hugging Face Hub id or local diffusers pipeline folder (FLUX.1 or SD 1.x/2.x)"
    )
    parser.add_argument("--image", required=True, help="the image to edit")
    parser.add_argument("--source-prompt", required=True, help="describes the image as it is")
    parser.add_argument("--target-prompt", required=True, help="the same description with only the edited words changed")
    parser.add_argument("--out", required=True, help="output image file (.png, .jpg, .webp)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument(
        "--method", default="sync-sde", help="a registered editing method: sync-sde (default), flowedit, sdedit, ode-inversion, ..."
    )
    g = parser.add_argument_group("method settings (defaults depend on the model and method)")
    g.add_argument("--steps", type=int, help="sampler grid steps N")
    g.add_argument("--start", type=int, help="first grid index i0: smaller = more noise = bigger edits (FlowEdit: steps - n_max)")
    g.add_argument("--n-max", type=int, help="FlowEdit's n_max (instead of --start)")
    g.add_argument("--guidance", type=float, help="target guidance (FLUX guidance embedding / SD CFG scale)")
    g.add_argument("--source-guidance", type=float, help="source guidance (default: --guidance; FlowEdit: 1.5)")
    g.add_argument(
        "--negative-prompt", help="true-CFG negative prompt for the target (FLUX, with --true-cfg > 1; SD: CFG negative)"
    )
    g.add_argument("--true-cfg", type=float, help="true classifier-free guidance scale on the target (FLUX)")
    g.add_argument(
        "--integrator", help="euler, heun (rectified flow), rf-solver, fireflow (ODE methods) or ddim (the DDIM/DDPM step; the default for SD)"
    )
    g.add_argument("--eta", type=float, help="noise scale of the reverse SDE (sync-sde, sdedit): 0 = ODE, 1 = the SDE")
    g.add_argument("--mask", help="mask image of the same size, white = may change, black = keep (not SDEdit)")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other setting of the method (repeatable): --set gamma=0.7 --set eta_stop=5",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same image (default 0)")
    r = parser.add_argument_group("runtime")
    r.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: the first available)")
    r.add_argument("--dtype", default="auto", help="auto (bf16 FLUX / fp16 SD on GPU, fp32 on CPU), float32, bfloat16, float16")
    r.add_argument("--offload", action="store_true", help="keep weights on the CPU, move each component to the GPU when used")
    r.add_argument(
        "--resize", action="store_true", help="resize the image to the nearest size the model takes instead of failing"
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The method settings the user gave (the settings vocabulary of :mod:`coupled_sde.editing.registry`):
    the named options and the ``--set NAME=VALUE`` ones (whose names and values the registry checks)."""
    names = ("steps", "start", "n_max", "guidance", "source_guidance", "negative_prompt", "true_cfg", "integrator", "eta")
    settings = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    for item in getattr(args, "set", None) or []:
        name, value = parse_setting(item)
        if name in settings and settings[name] != value:
            raise ValueError(f"--set {item} contradicts --{name.replace('_', '-')} {settings[name]}")
        settings[name] = value
    return settings


def parse_setting(item: str) -> tuple[str, object]:
    """``NAME=VALUE`` to ``(name, value)``: an integer, a number, or else the text (``-`` in names reads as ``_``)."""
    name, sep, text = item.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not text.strip():
        raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
    text = text.strip()
    for convert in (int, float):
        try:
            return name, convert(text)
        except ValueError:
            pass
    return name, text


def _say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Check everything cheap, load the model, edit, save; print model calls and seconds."""
    from coupled_sde._optional import require
    from coupled_sde.io import check_output, image_size

    from ._runtime import check_device, check_finite, check_hub_model, check_settings_for, configure_threads

    t_start = time.perf_counter()
    out = check_output(args.out, args.force)  # before anything slow: no work lost to an existing file
    check_device(args.device)
    check_finite(settings_from_args(args), args.method)
    configure_threads(args.threads)
    height, width = image_size(args.image)  # missing / unreadable image: fail now
    if args.mask is not None:
        mask_hw = image_size(args.mask)
        if mask_hw != (height, width):
            raise ValueError(f"the mask {args.mask!r} is {mask_hw[0]}x{mask_hw[1]} (HxW) but the image is {height}x{width}")
    require("diffusers", "diffusers")
    require("transformers", "diffusers")

    from coupled_sde.backends.registry import backbone_class
    from coupled_sde.editing import api
    from coupled_sde.editing.registry import get_method

    settings = settings_from_args(args)
    api.validate_settings(args.method, settings)  # unknown method, bad names, types or ranges: fail now
    if args.mask is not None and not get_method(args.method).masks:
        raise ValueError(f"{args.method} does not support masks")
    check_hub_model(str(args.model))  # offline and not cached: one line now, not 28 s of retries
    family = api.model_family(args.model)  # missing folder / unsupported pipeline: fail now
    check_settings_for(backbone_class(family), args.method, settings)  # against the model's defaults, before the load
    multiple = api.size_multiple(args.model, family)
    image, mask = api.load_inputs(args.image, args.mask, multiple, args.resize)
    resized = tuple(image.shape[-2:]) != (height, width)
    if resized:
        _say(f"--resize: {height}x{width} becomes {image.shape[-2]}x{image.shape[-1]} (HxW, multiples of {multiple})", args.quiet)

    import torch

    from coupled_sde.io import save_image

    _say(f"loading {args.model} ({family}) ...", args.quiet)
    t_load = time.perf_counter()
    backbone = api.load_backbone(
        args.model, family=family, device=args.device, dtype=args.dtype, offload=args.offload, quiet=args.quiet
    )
    load_seconds = time.perf_counter() - t_load
    configure_threads(getattr(args, "threads", None), backbone, api.execution_device(backbone))
    image = image.to(api.execution_device(backbone))
    resolved = api.resolve_settings(backbone, args.method, settings)  # unknown / conflicting settings: before editing
    _say(f"{args.method}: " + ", ".join(f"{k}={v}" for k, v in resolved.items()), args.quiet)
    with torch.inference_mode():
        result = api.edit_tensor(
            backbone,
            image,
            args.source_prompt,
            args.target_prompt,
            args.method,
            seed=args.seed,
            mask=mask,
            progress=not args.quiet,
            **settings,
        )
    save_image(result.images, out, force=args.force)
    total = time.perf_counter() - t_start
    size = f", resized from {height}x{width} to {image.shape[-2]}x{image.shape[-1]}" if resized else ""
    print(
        f"saved {out} ({args.method}, seed {args.seed}{size}): {result.model_calls} model calls "
        f"({result.model_evaluations} evaluations), edit {result.seconds:.2f} s, "
        f"model load {load_seconds:.1f} s, total {total:.1f} s"
    )
    return 0
