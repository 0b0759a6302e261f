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
    "app": ("app", "a web app to edit images interactively (needs the 'app' extra: Gradio)"),
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("coupled-sde")
    except Exception:  # running from a source tree that is not installed
        from coupled_sde import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    from coupled_sde.commands._runtime import add_threads_argument

    parser = argparse.ArgumentParser(prog="coupled-sde", description="Coupled SDEs and sync-SDE image editing.")
    parser.add_argument("--version", action="version", version=f"coupled-sde {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(f"coupled_sde.commands.{module}").add_arguments(p)
        add_threads_argument(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command: errors are one line on stderr and exit code 1, Ctrl-C exits 130."""
    from coupled_sde.commands._runtime import guarded, quiet_libraries

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("\ncoupled-sde: interrupted", file=sys.stderr, flush=True)
        return 130
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    quiet_libraries(getattr(args, "quiet", False))
    module = importlib.import_module(f"coupled_sde.commands.{args._module}")
    return guarded(f"coupled-sde {args.command}", lambda: module.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
