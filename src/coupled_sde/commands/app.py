"""``coupled-sde app``: serve the editing web app (the ``app`` extra: Gradio) on this machine.

By default it runs the shipped model, offline, and listens on 127.0.0.1 only (``--host 0.0.0.0``
to serve a network). Checked before the model is loaded: the extra, the device, the model folder
or hub id. Only the standard library is imported at import time.
"""

from __future__ import annotations

import argparse
import sys

_EPILOG = """\
examples:
  coupled-sde app                                   # the shipped model, http://127.0.0.1:7860
  coupled-sde app --model black-forest-labs/FLUX.1-dev --device cuda
  coupled-sde app --model ./my-sd-folder --port 8000 --host 0.0.0.0
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``app`` subcommand's options."""
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model", help="a shipped model's name, a local diffusers pipeline folder or a hub id (default: the shipped model)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    parser.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: the first available)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (diffusers models)")
    parser.add_argument("--quiet", action="store_true", help="no startup messages from Gradio")


def run(args: argparse.Namespace) -> int:
    """Check what is cheap, load the model once, serve until Ctrl-C."""
    from coupled_sde._optional import require

    from ._runtime import check_device, check_hub_model, configure_threads

    require("gradio", "app")
    check_device(args.device)
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    from coupled_sde.app import app_model, app_models, launch

    if args.model is not None and args.model not in app_models():
        require("diffusers", "diffusers")
        check_hub_model(args.model)
    configure_threads(getattr(args, "threads", None))
    model = app_model(args.model, device=args.device, dtype=args.dtype)
    print(f"coupled-sde app: loading {model.title} ...", file=sys.stderr, flush=True)
    configure_threads(getattr(args, "threads", None), model.backbone, args.device)
    port = None if args.port == 0 else args.port
    if port is None:
        import socket

        with socket.socket() as s:
            s.bind((args.host, 0))
            port = s.getsockname()[1]
    print(f"coupled-sde app: serving on http://{args.host}:{port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    launch(model, host=args.host, port=port, block=True, quiet=args.quiet)
    return 0
