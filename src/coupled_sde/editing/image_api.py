"""Edit an image file in one call, with per-model defaults: what ``coupled-sde edit`` and dataset runs use.

:func:`edit_image` takes a model (hub id, local folder, diffusers pipeline or backbone), an image
(path, PIL or tensor) and two prompts, and returns the edited PIL image. Underneath:

* :func:`model_family` reads a checkpoint's ``model_index.json`` (``_class_name``) to tell FLUX.1
  from Stable Diffusion *before* loading gigabytes of weights; :func:`load_backbone` loads it.
* :data:`DEFAULTS` holds each method's settings per model family, in the user-facing vocabulary
  (``steps``, ``start``, ``guidance``, ``source_guidance``, ...); :func:`resolve_settings` merges
  the user's over them and :func:`method_arguments` translates them to the method's arguments.
* :func:`edit_tensor` runs one edit on a ``(1, 3, H, W)`` tensor and returns the
  :class:`~coupled_sde.editing.common.EditResult` (model calls, seconds, image).

Settings vocabulary (the same in the CLI, in ``settings.json`` of dataset runs and here):

=================  =======================================================================
``steps``          grid steps N of the sampler schedule
``start``          first grid index i0 (sigma_{i0} is the noise level the edit starts from);
                   for FlowEdit ``start = steps - n_max`` (``n_max`` is accepted too)
``guidance``       the target's guidance (FLUX: guidance embedding; SD: CFG scale)
``source_guidance``  the source's guidance (defaults to ``guidance`` except for FlowEdit)
``negative_prompt``, ``true_cfg``  true CFG on the target (FLUX); SD: the target's negative prompt
``integrator``     ``"euler"`` or ``"heun"`` (sync-SDE, SDEdit, ODE inversion)
``coupling``, ``forward_rule``  sync-SDE ablations; ``n_min``, ``n_avg``: FlowEdit's
=================  =======================================================================
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..backends.base import Condition
from ..io import ImageLike, load_image, load_mask, resize_to_multiple, to_pil
from .api import edit_images
from .common import EditResult

__all__ = [
    "DEFAULTS",
    "FAMILIES",
    "SETTING_KEYS",
    "as_backbone",
    "backbone_family",
    "backbone_multiple",
    "check_method",
    "default_device",
    "edit_image",
    "edit_tensor",
    "execution_device",
    "load_backbone",
    "method_arguments",
    "model_family",
    "parse_dtype",
    "resize_for",
    "resolve_settings",
    "size_multiple",
]

#: Model families the image API knows, and the diffusers pipeline classes that load as each.
FAMILIES: dict[str, tuple[str, ...]] = {
    "flux": ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
    "stable-diffusion": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
}

#: Per-family, per-method defaults (user vocabulary). FLUX: the sync-SDE reference (28 steps, i0 = 4,
#: guidance embedding 1.0 for source and target; SDEdit and ODE inversion use the same grid and
#: guidance, so that only the coupling differs) and FlowEdit's published FLUX setting (n_max = 24,
#: 1.5 / 5.5). Stable Diffusion (VP methods of :mod:`coupled_sde.editing.vp_methods`): 50 DDIM
#: timesteps from index 10 (t = 781, img2img's strength 0.8), CFG 7.5; DDIM inversion under the
#: source at CFG 1. FlowEdit is defined for flow models only. Models without a guidance embedding
#: (FLUX.1-schnell) get no guidance.
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "flux": {
        "sync-sde": {"steps": 28, "start": 4, "guidance": 1.0},
        "flowedit": {"steps": 28, "start": 4, "guidance": 5.5, "source_guidance": 1.5},
        "sdedit": {"steps": 28, "start": 4, "guidance": 1.0},
        "ode-inversion": {"steps": 28, "start": 4, "guidance": 1.0},
        # RF-Inversion as diffusers' community pipeline runs it: full inversion, guidance 0 / 3.5
        "rf-inversion": {"steps": 28, "start": 0, "guidance": 3.5, "source_guidance": 0.0},
    },
    "stable-diffusion": {
        "sync-sde": {"steps": 50, "start": 10, "guidance": 7.5},
        "sdedit": {"steps": 50, "start": 10, "guidance": 7.5},
        "ode-inversion": {"steps": 50, "start": 10, "guidance": 7.5, "source_guidance": 1.0},
    },
}

#: Settings each method accepts (user vocabulary).
SETTING_KEYS: dict[str, frozenset[str]] = {
    "sync-sde": frozenset(
        {"steps", "start", "guidance", "source_guidance", "negative_prompt", "true_cfg", "integrator", "coupling", "forward_rule"}
    ),
    "flowedit": frozenset(
        {"steps", "start", "n_max", "n_min", "n_avg", "guidance", "source_guidance", "negative_prompt", "true_cfg"}
    ),
    "sdedit": frozenset({"steps", "start", "guidance", "negative_prompt", "true_cfg", "integrator"}),
    "ode-inversion": frozenset({"steps", "start", "guidance", "source_guidance", "negative_prompt", "true_cfg", "integrator"}),
    "rf-inversion": frozenset(
        {"steps", "start", "guidance", "source_guidance", "gamma", "eta", "eta_start", "eta_stop", "inversion", "negative_prompt", "true_cfg"}
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# -- models -------------------------------------------------------------------------------------


def _local_folder(model: str | os.PathLike) -> Path | None:
    """The local folder ``model`` names, or ``None`` when it reads as a Hugging Face Hub id.

    An existing path is local; so is anything that can't be a hub id (absolute, ``./``, ``~``,
    more than one ``/``). ``org/name`` that does not exist locally is a hub id.
    """
    p = Path(model).expanduser()
    if p.exists():
        return p
    text = os.fspath(model)
    return None if _HUB_ID.match(text) else p


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
    from coupled_sde._optional import require

    require("diffusers", "diffusers")
    from diffusers import DiffusionPipeline

    try:  # fetches model_index.json only (or reads it from the local cache)
        config = DiffusionPipeline.load_config(os.fspath(model))
    except Exception as e:  # network, auth, missing repo: all "can't find that model"
        raise ValueError(
            f"cannot find model {os.fspath(model)!r}: no local folder of that name, and the Hugging Face Hub lookup failed ({e})"
        ) from None
    return str(config.get("_class_name", ""))


def model_family(model: str | os.PathLike) -> str:
    """``"flux"`` or ``"stable-diffusion"`` for a checkpoint, from its ``model_index.json`` ``_class_name``.

    Local folders are read directly (no diffusers import); hub ids fetch ``model_index.json`` only.
    Raises ``FileNotFoundError`` for a missing local folder and ``ValueError`` for other pipelines.
    """
    name = _pipeline_class(model)
    for family, classes in FAMILIES.items():
        if name in classes:
            return family
    supported = ", ".join(c for cs in FAMILIES.values() for c in cs)
    raise ValueError(f"model {os.fspath(model)!r} is a {name or 'unknown pipeline'}; supported pipelines: {supported}")


def size_multiple(model: str | os.PathLike, family: str | None = None) -> int:
    """What image sides must be multiples of: the VAE's downsampling (x2 for FLUX's patch packing).

    Read from a local folder's ``vae/config.json`` (``2 ** (len(block_out_channels) - 1)``); 8 otherwise.
    """
    family = family or model_family(model)
    factor = 8
    folder = _local_folder(model)
    config = folder / "vae" / "config.json" if folder is not None else None
    if config is not None and config.is_file():
        try:
            factor = 2 ** (len(json.loads(config.read_text())["block_out_channels"]) - 1)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    return 2 * factor if family == "flux" else factor


def default_device() -> str:
    """``"cuda"`` when available, else ``"mps"``, else ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype | None, family: str, device: str | torch.device) -> torch.dtype:
    """The dtype the model runs in. ``"auto"``/``None``: float32 on the CPU; on accelerators bfloat16
    for FLUX (the reference) and float16 for Stable Diffusion (its VAE is upcast when needed)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if torch.device(device).type == "cpu":
            return torch.float32
        return torch.bfloat16 if family == "flux" else torch.float16
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
    """Load a FLUX.1 or Stable Diffusion checkpoint (hub id or local folder) as a backbone.

    ``device`` defaults to :func:`default_device`; ``dtype`` as :func:`parse_dtype`. ``offload``
    keeps the weights on the CPU and moves each component to the device when it runs
    (``enable_model_cpu_offload``: FLUX.1-dev in bf16 on a 24 GB GPU). ``quiet`` turns off
    diffusers' and transformers' loading progress bars (process-wide).
    """
    from coupled_sde._optional import require

    require("diffusers", "diffusers")
    require("transformers", "diffusers")
    family = family or model_family(model)
    device = device or default_device()
    torch_dtype = parse_dtype(dtype, family, device)
    from coupled_sde.backends.diffusers import FluxBackbone, StableDiffusionBackbone

    cls = FluxBackbone if family == "flux" else StableDiffusionBackbone
    if quiet:
        import transformers
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    try:
        backbone = cls.from_pretrained(os.fspath(model), torch_dtype=torch_dtype, device=None if offload else device)
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
    if name in FAMILIES["flux"]:
        from coupled_sde.backends.diffusers import FluxBackbone

        return FluxBackbone(model)
    if name in FAMILIES["stable-diffusion"]:
        from coupled_sde.backends.diffusers import StableDiffusionBackbone

        return StableDiffusionBackbone(model)
    raise TypeError(f"expected a model id or folder, a FLUX / Stable Diffusion pipeline or an image backbone, got {name}")


def backbone_family(backbone: Any) -> str:
    """``"stable-diffusion"`` for VP (epsilon / v) backbones, ``"flux"`` for rectified-flow ones."""
    return "stable-diffusion" if getattr(backbone, "prediction", "flow") in ("epsilon", "v") else "flux"


# -- settings -----------------------------------------------------------------------------------


def check_method(method: str, family: str) -> None:
    """``ValueError`` unless ``method`` exists and applies to the model family (FlowEdit needs a flow model)."""
    if method not in SETTING_KEYS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(SETTING_KEYS)}")
    if method not in DEFAULTS[family]:
        raise ValueError(
            f"{method} is defined for rectified-flow models (FLUX); with Stable Diffusion use {', '.join(DEFAULTS[family])}"
        )


def resolve_settings(backbone: Any, method: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults for this backbone with ``settings`` on top (``None`` values are dropped).

    Unknown keys are a ``ValueError`` listing the accepted ones. ``source_guidance`` defaults to
    ``guidance`` (so identical prompts reproduce the source); models without a guidance embedding
    (FLUX.1-schnell) get no guidance unless the user sets it.
    """
    family = backbone_family(backbone)
    check_method(method, family)
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    unknown = sorted(set(given) - SETTING_KEYS[method])
    if unknown:
        raise ValueError(f"{method} does not take the setting(s) {unknown}; it takes {sorted(SETTING_KEYS[method])}")
    merged = dict(DEFAULTS[family][method])
    if getattr(backbone, "has_guidance_embedding", True) is False:
        merged.pop("guidance", None)
        merged.pop("source_guidance", None)
    if "n_max" in given:
        if "start" in given:
            raise ValueError("give FlowEdit's start or n_max (start = steps - n_max), not both")
        merged.pop("start", None)
    merged.update(given)
    if "source_guidance" not in merged and "guidance" in merged and "source_guidance" in SETTING_KEYS[method]:
        merged["source_guidance"] = merged["guidance"]
    return merged


def method_arguments(
    method: str, settings: dict[str, Any], source_prompt: str | None, target_prompt: str | None
) -> tuple[Condition, Condition, dict[str, Any]]:
    """Translate resolved settings into ``(source, target, keyword arguments)`` for :func:`edit_images`."""
    s = dict(settings)
    steps = int(s.pop("steps"))
    kwargs: dict[str, Any] = {"n_steps": steps}
    guidance, source_guidance = s.pop("guidance", None), s.pop("source_guidance", None)
    negative, true_cfg = s.pop("negative_prompt", None), float(s.pop("true_cfg", 1.0))
    source = Condition(source_prompt, None if source_guidance is None else float(source_guidance))
    target = Condition(target_prompt, None if guidance is None else float(guidance), negative, true_cfg)
    if method == "flowedit":
        n_max = s.pop("n_max", None)
        start = s.pop("start", None)
        kwargs["n_max"] = int(n_max) if n_max is not None else steps - int(start)
        kwargs["source_guidance"], kwargs["target_guidance"] = source.guidance, target.guidance
    else:
        kwargs["start"] = int(s.pop("start"))
    kwargs.update(s)
    return source, target, kwargs


# -- editing ------------------------------------------------------------------------------------


def edit_tensor(
    backbone: Any,
    image: torch.Tensor,
    source_prompt: str | None,
    target_prompt: str | None,
    method: str = "sync-sde",
    *,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    progress: bool = False,
    **settings: Any,
) -> EditResult:
    """Edit one image ``(1, 3, H, W)`` in ``[-1, 1]``; ``settings`` in the user vocabulary over :data:`DEFAULTS`.

    ``mask`` is ``(1, 1, H, W)`` at the image size (1 = editable); it is averaged down to the latent
    grid. The result's ``settings`` are the resolved user settings plus the method's own report.
    """
    resolved = resolve_settings(backbone, method, settings)
    source, target, kwargs = method_arguments(method, resolved, source_prompt, target_prompt)
    height, width = int(image.shape[-2]), int(image.shape[-1])
    _, h, w = backbone.latent_shape(height, width)  # ValueError naming the nearest valid size
    if mask is not None:
        kwargs["mask"] = load_mask(mask, (h, w), source_size=(height, width), threshold=None)
    if progress:
        kwargs["progress"] = True
    result = edit_images(backbone, image, method, source, target, seed=int(seed), **kwargs)
    result.settings = {**resolved, **{k: v for k, v in result.settings.items() if k not in resolved}}
    return result


def edit_image(
    model: Any,
    image: ImageLike,
    source_prompt: str | None,
    target_prompt: str | None,
    method: str = "sync-sde",
    *,
    seed: int = 0,
    mask: ImageLike | None = None,
    resize: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = False,
    **settings: Any,
):
    """Edit an image from ``source_prompt`` to ``target_prompt`` in one call; returns a PIL image.

    Args:
        model: a hub id or local folder (loaded with :func:`load_backbone` on ``device`` in
            ``dtype``), a ``FluxPipeline`` / ``StableDiffusionPipeline``, or a backbone. Pass a
            pipeline or backbone to edit many images without reloading.
        image: a path, PIL image or tensor (see :func:`coupled_sde.io.load_image`).
        method: ``"sync-sde"`` (default), ``"flowedit"``, ``"sdedit"`` or ``"ode-inversion"``.
        seed: the same seed gives the same image.
        mask: optional mask at the image size, white = editable (not for SDEdit).
        resize: resize the image (and mask) to the nearest size the model takes, instead of an error.
        settings: ``steps``, ``start``, ``guidance``, ... (module docstring), over :data:`DEFAULTS`.

    The returned image's ``info["coupled_sde"]`` holds the method, resolved settings, seed, model
    calls and seconds.
    """
    backbone = as_backbone(model, device=device, dtype=dtype)
    x = load_image(image)
    original = (int(x.shape[-2]), int(x.shape[-1]))
    if resize:
        x = resize_for(backbone, x)
    m = None if mask is None else load_mask(mask, tuple(x.shape[-2:]), source_size=original, threshold=None)
    x = x.to(execution_device(backbone))
    result = edit_tensor(backbone, x, source_prompt, target_prompt, method, seed=seed, mask=m, progress=progress, **settings)
    pil = to_pil(result.images)
    pil.info["coupled_sde"] = {
        "method": method,
        "settings": result.settings,
        "seed": seed,
        "model_calls": result.model_calls,
        "model_evaluations": result.model_evaluations,
        "seconds": result.seconds,
    }
    return pil


def backbone_multiple(backbone: Any) -> int:
    """What image sides must be multiples of for a loaded backbone (16 for FLUX.1, 8 for SD)."""
    return int(getattr(backbone, "vae_scale_factor", 8)) * (2 if backbone_family(backbone) == "flux" else 1)


def resize_for(backbone: Any, image: torch.Tensor) -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` images to the nearest sides the backbone accepts (see :func:`backbone_multiple`)."""
    return resize_to_multiple(image, backbone_multiple(backbone))


def execution_device(backbone: Any) -> torch.device:
    """Where the backbone's inputs go (the accelerator also under CPU offloading); the CPU for
    backbones without a diffusers pipeline. Keeping the image there keeps the SDE state there."""
    pipe = getattr(backbone, "pipe", None)
    if pipe is None:
        return torch.device("cpu")
    from coupled_sde.backends.diffusers._common import execution_device as pipe_device

    return pipe_device(pipe)
