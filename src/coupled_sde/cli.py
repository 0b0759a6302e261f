"""``coupled-sde``: the command line. Each subcommand lives in :mod:`coupled_sde.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> module in coupled_sde.commands exposing ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS = {
    "demo": ("demo", "edit shipped-model scenes (or --model digits) with sync-SDE and every baseline, offline"),
    "study": ("study", "closed-form studies: coupled Gaussian-mixture paths, convergence orders, the law of edits"),
    "edit": ("edit", "edit an image with FLUX.1 / Stable Diffusion (needs the 'diffusers' extra)"),
    "run": ("dataset", "edit a dataset of (image, source prompt, target prompt) triplets, resumable, with metrics"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coupled-sde", description="Coupled SDEs and sync-SDE image editing.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(f"coupled_sde.commands.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(f"coupled_sde.commands.{args._module}")
    try:
        return int(module.run(args) or 0)
    except (FileExistsError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"coupled-sde {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
