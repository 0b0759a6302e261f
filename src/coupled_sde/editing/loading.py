"""Models: from a hub id, a local folder or a pipeline object to a registered backbone.

:func:`model_backbone` reads a checkpoint's ``model_index.json`` (``_class_name``) and finds the
backbone class that declares that pipeline (:mod:`coupled_sde.backends.registry`) *before* loading
gigabytes of weights; :func:`size_multiple` says what image sides it takes; :func:`load_backbone`
loads it in the backbone's declared dtype.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..backends.registry import image_multiple, pipeline_backbone

__all__ = [
    "as_backbone",
    "backbone_multiple",
    "default_device",
    "execution_device",
    "load_backbone",
    "model_backbone",
    "model_family",
    "parse_dtype",
    "size_multiple",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _local_folder(model: str | os.PathLike) -> Path | None:
    """The local folder ``model`` names, or ``None`` when it reads as a Hugging Face Hub id
    (``org/name`` that does not exist locally)."""
    p = Path(model).expanduser()
    if p.exists():
        return p
    return None if _HUB_ID.match(os.fspath(model)) else p


def _pipeline_class(model: str | os.PathLike) -> str:
    folder = _local_folder(model)
    if folder is not None:
        if not folder.exists():
            raise FileNotFoundError(f"model folder not found: {str(folder)!r}")
        index = folder / "model_index.json"
        if not index.is_file():
            raise ValueError(
                f"{str(folder)!r} is not a diffusers pipeline folder (no model_index.json); "
                "save one with pipe.save_pretrained(folder) or give a Hugging Face Hub id"
            )
        try:
            return str(json.loads(index.read_text())["_class_name"])
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{str(index)!r} is not a valid model_index.json ({e!r})") from None
    from .._optional import require

    require("diffusers", "diffusers")
    from diffusers import DiffusionPipeline

    try:  # fetches model_index.json only (or reads it from the local cache)
        config = DiffusionPipeline.load_config(os.fspath(model))
    except Exception as e:  # network, auth, missing repo: all "can't find that model"
        raise ValueError(
            f"cannot find model {os.fspath(model)!r}: no local folder of that name, and the Hugging Face Hub lookup failed ({e})"
        ) from None
    return str(config.get("_class_name", ""))


def model_backbone(model: str | os.PathLike) -> type:
    """The registered backbone class for a checkpoint (hub id or local folder), without loading it."""
    name = _pipeline_class(model)
    try:
        return pipeline_backbone(name)
    except ValueError as e:
        raise ValueError(f"model {os.fspath(model)!r}: {e}") from None


def model_family(model: str | os.PathLike) -> str:
    """The registry name of a checkpoint's backbone (``"flux"``, ``"stable-diffusion"``, ...)."""
    return model_backbone(model).name


def size_multiple(model: str | os.PathLike, family: str | None = None) -> int:
    """What image sides must be multiples of for a checkpoint, before loading it."""
    from ..backends.registry import backbone_class

    cls = backbone_class(family) if family else model_backbone(model)
    return image_multiple(cls, _local_folder(model))


def backbone_multiple(backbone: Any) -> int:
    """What image sides must be multiples of for a loaded backbone."""
    return int(getattr(backbone, "image_multiple", 1))


def default_device() -> str:
    """``"cuda"`` when available, else ``"mps"``, else ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}  # fmt: skip


def parse_dtype(dtype: str | torch.dtype | None, cls: Any, device: str | torch.device) -> torch.dtype:
    """The dtype the model runs in. ``"auto"``/``None``: float32 on the CPU, the backbone class's
    declared ``dtype`` on accelerators (bf16 for FLUX, fp16 for Stable Diffusion)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32 if torch.device(device).type == "cpu" else getattr(cls, "dtype", torch.float32)
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(_DTYPES)}") from None


def load_backbone(
    model: str | os.PathLike,
    *,
    family: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    offload: bool = False,
    quiet: bool = False,
) -> Any:
    """Load a checkpoint (hub id or local folder) as its registered backbone.

    ``device`` defaults to :func:`default_device`; ``dtype`` as :func:`parse_dtype`. ``offload``
    keeps the weights on the CPU and moves each component to the device when it runs
    (``enable_model_cpu_offload``). ``quiet`` turns off the loading progress bars (process-wide).
    """
    from .._optional import require
    from ..backends.registry import backbone_class

    require("diffusers", "diffusers")
    require("transformers", "diffusers")
    cls = backbone_class(family) if family else model_backbone(model)
    device = device or default_device()
    if quiet:
        import transformers
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    try:
        backbone = cls.from_pretrained(
            os.fspath(model), torch_dtype=parse_dtype(dtype, cls, device), device=None if offload else device
        )
    except OSError as e:  # diffusers reports missing/corrupt weights and network failures as OSError
        raise ValueError(f"cannot load model {os.fspath(model)!r}: {e}") from None
    if offload:
        backbone.pipe.enable_model_cpu_offload(device=device)
    return backbone


def as_backbone(model: Any, **load_kwargs: Any) -> Any:
    """A backbone from a hub id / folder (:func:`load_backbone`), a diffusers pipeline, or a backbone."""
    if isinstance(model, (str, os.PathLike)):
        return load_backbone(model, **load_kwargs)
    if hasattr(model, "encode_images") and hasattr(model, "predict"):
        return model
    name = type(model).__name__
    try:
        cls = pipeline_backbone(name)
    except ValueError:
        raise TypeError(f"expected a model id or folder, a supported pipeline or an image backbone, got {name}") from None
    return cls.from_pipeline(model)


def execution_device(backbone: Any) -> torch.device:
    """Where the backbone's inputs go (the accelerator also under CPU offloading); the CPU for
    backbones without a diffusers pipeline. Keeping the image there keeps the SDE state there."""
    pipe = getattr(backbone, "pipe", None)
    if pipe is None:
        return getattr(backbone, "device", torch.device("cpu"))
    from ..backends.hf._common import execution_device as pipe_device

    return pipe_device(pipe)
