"""diffusers backbones: FLUX.1, FLUX.2 (dev, Klein), SD 1.x/2.x, SDXL, SD3/3.5, Qwen-Image, plus tiny offline pipelines.

Importing this package only checks that diffusers and transformers are installed (it raises an
``ImportError`` saying ``pip install "coupled-sde[diffusers]"`` otherwise); the backbones and
diffusers itself (about 10 s to import) are loaded on first attribute access.

* :class:`FluxBackbone` -- rectified flow, ``prediction = "flow"``.
* :class:`StableDiffusionBackbone` -- VP diffusion, ``prediction`` in ``{"epsilon", "v"}``.
* :class:`StableDiffusion3Backbone`, :class:`Flux2Backbone`, :class:`Flux2KleinBackbone`,
  :class:`QwenImageBackbone` -- rectified flow; :class:`StableDiffusionXLBackbone` -- VP diffusion.
* :func:`tiny_flux_pipeline`, :func:`tiny_sd_pipeline` and the builders of
  :mod:`~coupled_sde.backends.hf.tiny_backbones` -- complete tiny pipelines with random
  weights for tests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from coupled_sde._optional import require

require("diffusers", "diffusers")
require("transformers", "diffusers")

if TYPE_CHECKING:
    from coupled_sde.backends.hf.flux import FluxBackbone
    from coupled_sde.backends.hf.flux2 import Flux2Backbone, Flux2KleinBackbone
    from coupled_sde.backends.hf.qwen_image import QwenImageBackbone
    from coupled_sde.backends.hf.sd3 import StableDiffusion3Backbone
    from coupled_sde.backends.hf.sdxl import StableDiffusionXLBackbone
    from coupled_sde.backends.hf.stable_diffusion import StableDiffusionBackbone
    from coupled_sde.backends.hf.tiny import tiny_flux_pipeline, tiny_sd_pipeline
    from coupled_sde.backends.hf.tiny_backbones import (
        tiny_flux2_klein_pipeline,
        tiny_flux2_pipeline,
        tiny_qwen_image_pipeline,
        tiny_sd3_pipeline,
        tiny_sdxl_pipeline,
    )

_EXPORTS = {
    "FluxBackbone": "flux",
    "StableDiffusionBackbone": "stable_diffusion",
    "tiny_flux_pipeline": "tiny",
    "tiny_sd_pipeline": "tiny",
    "StableDiffusion3Backbone": "sd3",
    "StableDiffusionXLBackbone": "sdxl",
    "Flux2Backbone": "flux2",
    "Flux2KleinBackbone": "flux2",
    "QwenImageBackbone": "qwen_image",
    "tiny_sd3_pipeline": "tiny_backbones",
    "tiny_sdxl_pipeline": "tiny_backbones",
    "tiny_flux2_pipeline": "tiny_backbones",
    "tiny_flux2_klein_pipeline": "tiny_backbones",
    "tiny_qwen_image_pipeline": "tiny_backbones",
}

__all__ = [
    "FluxBackbone",
    "StableDiffusionBackbone",
    "tiny_flux_pipeline",
    "tiny_sd_pipeline",
    "StableDiffusion3Backbone",
    "StableDiffusionXLBackbone",
    "Flux2Backbone",
    "Flux2KleinBackbone",
    "QwenImageBackbone",
    "tiny_sd3_pipeline",
    "tiny_sdxl_pipeline",
    "tiny_flux2_pipeline",
    "tiny_flux2_klein_pipeline",
    "tiny_qwen_image_pipeline",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
