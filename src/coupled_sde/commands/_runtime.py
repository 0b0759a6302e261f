"""What every command shares at run time: one-line errors, Ctrl-C, threads, quiet libraries, cheap checks.

* :func:`guarded` runs a command: any exception becomes **one line** on stderr
  (``coupled-sde <command>: error: ...``) and exit code 1, Ctrl-C (SIGINT) becomes
  ``coupled-sde <command>: interrupted`` and exit code 130 (128 + SIGINT, the shell's convention).
  ``COUPLED_SDE_TRACEBACK=1`` prints the traceback too, for bug reports.
* :func:`configure_threads` -- ``--threads N``, or a default that suits the model: one thread for
  small models on the CPU (a tiny pipeline's edit was 3 to 30 times faster on one thread than on two
  on a busy 2-core machine, and at most a fifth slower on an idle one; ``benchmarks/bench_threads.py``,
  ``docs/cli.md``), torch's default otherwise. ``OMP_NUM_THREADS`` in the environment is respected.
* :func:`quiet_libraries` -- silences transformers' two "requires torchvision" notices (the PIL
  fallback it picks is what this project uses) and, with ``--quiet``, the libraries' info logs.
* :func:`check_device` and :func:`check_hub_model` -- a device the machine does not have, or a hub
  id that cannot be fetched (offline), are one-line errors before anything is loaded, not a
  traceback after the load or 28 s of retries.
* :func:`check_finite` -- NaN / Inf settings are refused before the load.

Only the standard library is imported at import time (``coupled-sde --help`` stays fast).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "add_threads_argument",
    "check_device",
    "check_finite",
    "check_hub_model",
    "check_settings_for",
    "configure_threads",
    "guarded",
    "one_line",
    "quiet_libraries",
    "small_model",
]

#: Models with fewer parameters than this run on one CPU thread by default (see :func:`configure_threads`).
SMALL_MODEL_PARAMETERS = 50_000_000


def one_line(e: BaseException) -> str:
    """An exception as one line: its message (with the type when the message alone would be unclear)."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, ImportError, RuntimeError)) and type(e).__module__ in (
        "builtins",
        "coupled_sde.errors",
        "coupled_sde.runs.results",
    ):
        return text
    if type(e).__name__ == "NonFiniteError":
        return f"the computation produced NaN or Inf: {text}"
    return f"{type(e).__name__}: {text}"


def guarded(prog: str, run: Callable[[], int | None]) -> int:
    """Run ``run()``; errors and Ctrl-C become one line on stderr and an exit code (1, 130)."""
    try:
        return int(run() or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # e.g. `coupled-sde run --summarize DIR | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more can be written to the pipe
        except OSError:
            pass
        return 1
    except SystemExit:
        raise
    except BaseException as e:
        if os.environ.get("COUPLED_SDE_TRACEBACK"):
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr, flush=True)
        return 1


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (CPU threads for torch), unless the command already has it."""
    if any("--threads" in a.option_strings for a in parser._actions):
        return
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for torch (default: 1 for small models on the CPU, torch's default for large ones)",
    )


def small_model(model: Any) -> bool:
    """True when a backbone (or module, or pipeline) has fewer than :data:`SMALL_MODEL_PARAMETERS` parameters."""
    import torch

    seen: set[int] = set()
    total = 0
    modules = []
    for obj in (model, getattr(model, "network", None), getattr(model, "pipe", None)):
        if isinstance(obj, torch.nn.Module):
            modules.append(obj)
        components = getattr(obj, "components", None)
        if isinstance(components, Mapping):
            modules += [m for m in components.values() if isinstance(m, torch.nn.Module)]
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total < SMALL_MODEL_PARAMETERS


def configure_threads(threads: int | None, model: Any = None, device: Any = None) -> int:
    """Set torch's CPU threads: ``threads`` if given; else 1 for a small model on the CPU (unless
    ``OMP_NUM_THREADS`` is set); else torch's default. Returns the number in use."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ and model is not None:
        on_cpu = device is None or str(device).split(":")[0] == "cpu"
        if on_cpu and small_model(model):
            torch.set_num_threads(1)
    return torch.get_num_threads()


class _DropTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


def quiet_libraries(quiet: bool = False) -> None:
    """Drop transformers' "requires torchvision" notices; with ``quiet``, keep only the libraries' errors.

    Call before diffusers / transformers are imported (the notices come at import).
    """
    notices = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropTorchvisionNotice) for f in notices.filters):
        notices.addFilter(_DropTorchvisionNotice())
    if quiet:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for name in ("transformers", "diffusers", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.ERROR)


def check_device(device: str | None, option: str = "--device ") -> None:
    """A one-line ``ValueError`` unless ``device`` (``cuda``, ``cuda:1``, ``mps``, ``cpu``, ...) exists here.

    ``option`` prefixes the message (the CLI's ``--device ``; the API passes ``device=``)."""
    if device is None:
        return
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option}{device!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if d.type == "cpu":
        return
    if d.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{option}{device}: {why}; use {option}cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"{option}{device}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)")
        return
    if d.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{option}{device}: Apple's MPS is not available on this machine; use {option}cpu")
        return
    backend = getattr(torch, d.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ValueError(f"{option}{device}: no {d.type} device on this machine; use {option}cpu")


def check_finite(settings: Mapping[str, Any], what: str = "") -> None:
    """A one-line ``ValueError`` for a NaN or infinite number among ``settings``."""
    for key, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            where = f"{what}: " if what else ""
            raise ValueError(f"{where}{key} must be a finite number, got {value}")


def check_settings_for(backbone_class: Any, method: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve ``settings`` over the method's and the backbone class's declared defaults, before loading it.

    Catches what depends on those defaults (``--steps 3`` against a default ``start`` of 4) and the
    start at noise level 1 of a rectified-flow model (``start = 0``: the reverse SDE divides by
    ``1 - sigma``) and attention sharing on a backbone that has none, which the loaded model would
    only report after the load. Returns the resolved settings.
    """
    from coupled_sde.editing.registry import get_method, resolve_settings
    from coupled_sde.editing.value_sharing import require_value_sharing

    resolved = resolve_settings(backbone_class, method, settings)
    at_noise = getattr(backbone_class, "prediction", None) == "flow" and resolved.get("start") == 0
    if at_noise and not get_method(method).starts_at_noise:
        raise ValueError(
            f"{method}: start=0 begins at sigma=1, where the rectified-flow SDE divides by (1 - sigma) = 0; use start >= 1"
        )
    if resolved.get("share_values"):
        require_value_sharing(backbone_class)
    return resolved


def _hub_host() -> tuple[str, int]:
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_model(model: str, timeout: float = 3.0, filename: str = "model_index.json", what: str = "model") -> None:
    """Fail fast, in one line, when ``model`` is a hub id that cannot be had: offline and not cached.

    A local path is left to the loader. For a hub id: its ``filename`` found in the local Hugging
    Face cache -> fine (the loader reads it from there; ``model_index.json`` for a diffusers
    pipeline, ``config.json`` for a transformers model); ``HF_HUB_OFFLINE`` set -> error now;
    otherwise a TCP connect to the hub (``HF_ENDPOINT``) with a ``timeout`` -- where huggingface_hub
    would retry for half a minute. ``what`` names the model in the message (e.g. an option).
    """
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return  # the loader will name the missing extra
    try:
        cached = try_to_load_from_cache(model, filename)
    except Exception:  # a malformed id: the loader's message is the right one
        return
    if isinstance(cached, str):
        return
    if _offline():
        raise ValueError(
            f"{what} {model!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "download it first or give a local folder"
        )
    import socket

    host, port = _hub_host()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ValueError(
            f"{what} {model!r} is not in the local Hugging Face cache and the hub ({host}) cannot be reached ({e}); "
            "connect, or give a local folder"
        ) from None
