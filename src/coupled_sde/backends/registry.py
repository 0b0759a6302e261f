"""The backbone registry: which backbone class loads which pipelines, with which defaults.

A backbone class declares, as class attributes (see :class:`BackboneInfo`), its ``name``, the
diffusers pipeline classes it accepts, its per-method default settings, the dtype it runs in on an
accelerator and its image-size multiple, and registers itself with :func:`register_backbone`::

    @register_backbone
    class MyBackbone(BackboneInfo):
        name = "my-model"
        pipelines = ("MyPipeline",)
        defaults = {"sync-sde": {"steps": 30, "start": 3}}
        ...

Every module under :mod:`coupled_sde.backends` (and one level of subpackages, e.g. ``hf/``) is
imported on the first registry lookup, so a new backbone is one new file. Modules whose optional
dependencies are missing are skipped (:func:`unavailable` says which and why).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "BackboneInfo",
    "backbone_class",
    "backbones",
    "defaults_for",
    "image_multiple",
    "pipeline_backbone",
    "register_backbone",
    "unavailable",
]

_REGISTRY: dict[str, type] = {}
_UNAVAILABLE: dict[str, str] = {}
_DISCOVERED = False
_SKIP = {"base", "registry", "wrappers", "tiny"}


class BackboneInfo:
    """Declarations every registered backbone class makes (and their neutral defaults)."""

    #: Registry name (``coupled-sde edit`` reports it; ``load_backbone(..., family=name)``).
    name: str = ""
    #: diffusers pipeline class names (``model_index.json`` ``_class_name``) this backbone wraps.
    pipelines: tuple[str, ...] = ()
    #: Per-method default settings in the settings vocabulary (``steps``, ``start``, ``guidance``, ...),
    #: over the method's own defaults. Only this backbone gets them.
    defaults: Mapping[str, Mapping[str, Any]] = {}
    #: The dtype the network runs in on an accelerator (float32 on the CPU).
    dtype: torch.dtype = torch.float32
    #: Latent pixels per token side (FLUX packs 2x2 patches): image sides are multiples of
    #: ``vae_scale_factor * patch_size``.
    patch_size: int = 1

    @property
    def image_multiple(self) -> int:
        """What image sides must be multiples of (1 for backbones without a VAE)."""
        return int(getattr(self, "vae_scale_factor", 1)) * int(self.patch_size)

    @classmethod
    def from_pipeline(cls, pipe: Any) -> Any:
        """Wrap an existing pipeline object."""
        return cls(pipe)


def register_backbone(cls: type) -> type:
    """Class decorator: add a backbone class to the registry under ``cls.name``."""
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__} needs a class attribute name to be registered")
    if name in _REGISTRY and _REGISTRY[name] is not cls and _REGISTRY[name].__qualname__ != cls.__qualname__:
        raise ValueError(f"backbone name {name!r} is already registered by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module("coupled_sde.backends")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in _SKIP:
            continue
        name = f"coupled_sde.backends.{info.name}"
        try:
            module = importlib.import_module(name)
            if info.ispkg:
                for sub in pkgutil.iter_modules(module.__path__):
                    if not sub.name.startswith("_") and sub.name not in _SKIP:
                        importlib.import_module(f"{name}.{sub.name}")
        except ImportError as e:  # an optional dependency is missing: its backbones are unavailable
            _UNAVAILABLE[name] = str(e)


def backbones() -> dict[str, type]:
    """Every registered backbone class by name."""
    _discover()
    return dict(_REGISTRY)


def unavailable() -> dict[str, str]:
    """Backbone modules that could not be imported, with the reason (a missing optional dependency)."""
    _discover()
    return dict(_UNAVAILABLE)


def backbone_class(name: str) -> type:
    """The backbone class registered as ``name``."""
    known = backbones()
    if name not in known:
        raise ValueError(f"unknown backbone {name!r}; registered: {sorted(known)}{_why_missing()}")
    return known[name]


def pipeline_backbone(pipeline_class: str) -> type:
    """The backbone class that wraps a diffusers pipeline class (by name)."""
    for cls in backbones().values():
        if pipeline_class in cls.pipelines:
            return cls
    supported = ", ".join(p for cls in _REGISTRY.values() for p in cls.pipelines)
    raise ValueError(f"no backbone for a {pipeline_class or 'unknown pipeline'}; supported pipelines: {supported}{_why_missing()}")


def _why_missing() -> str:
    return "".join(f" ({name} unavailable: {why})" for name, why in _UNAVAILABLE.items())


def defaults_for(backbone: Any, method: str) -> dict[str, Any]:
    """A backbone's (instance or class) declared defaults for ``method`` (settings vocabulary)."""
    return dict(getattr(backbone, "defaults", {}).get(method, {}))


def image_multiple(cls: type, folder: Any = None) -> int:
    """Image multiple of a backbone class before loading: ``patch_size`` times the VAE's downsampling,
    read from a local pipeline folder's ``vae/config.json`` (``2 ** (len(block_out_channels) - 1)``; 8 otherwise)."""
    factor = 8
    config = None if folder is None else folder / "vae" / "config.json"
    if config is not None and config.is_file():
        try:
            factor = 2 ** (len(json.loads(config.read_text())["block_out_channels"]) - 1)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    return factor * int(getattr(cls, "patch_size", 1))
