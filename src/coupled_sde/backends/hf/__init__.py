"""diffusers backbones: FLUX.1 (dev, schnell) and Stable Diffusion 1.x/2.x, plus tiny offline pipelines.

Importing this package only checks that diffusers and transformers are installed (it raises an
``ImportError`` saying ``pip install "coupled-sde[diffusers]"`` otherwise); the backbones and
diffusers itself (about 10 s to import) are loaded on first attribute access.

* :class:`FluxBackbone` -- rectified flow, ``prediction = "flow"``.
* :class:`StableDiffusionBackbone` -- VP diffusion, ``prediction`` in ``{"epsilon", "v"}``.
* :func:`tiny_flux_pipeline`, :func:`tiny_sd_pipeline` -- complete tiny pipelines with random
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
    from coupled_sde.backends.hf.stable_diffusion import StableDiffusionBackbone
    from coupled_sde.backends.hf.tiny import tiny_flux_pipeline, tiny_sd_pipeline

_EXPORTS = {
    "FluxBackbone": "flux",
    "StableDiffusionBackbone": "stable_diffusion",
    "tiny_flux_pipeline": "tiny",
    "tiny_sd_pipeline": "tiny",
}

__all__ = ["FluxBackbone", "StableDiffusionBackbone", "tiny_flux_pipeline", "tiny_sd_pipeline"]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
