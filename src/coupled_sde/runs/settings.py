"""Hyperparameter settings of a dataset run: lists, grids, or both, per method.

The paper evaluates every method at a few settings and plots one CLIP/LPIPS point per (method,
setting). A settings specification (a JSON/YAML file, or the same thing inline) is one of:

* a list of dicts, applied to every method: ``[{"start": 2}, {"start": 4}, {"start": 6}]``;
* a grid: a dict whose list values are axes, ``{"start": [2, 4, 6], "guidance": 1.0}`` (3 settings);
* per method, either of the above: ``{"sync-sde": {"start": [2, 4, 6]}, "flowedit": [{"n_max": 24}]}``
  (methods not named run with their defaults).

Keys are the user vocabulary of :mod:`coupled_sde.editing.registry` (``steps``, ``start``,
``guidance``, ...), validated here per method; ``{}`` means the model's defaults. A setting's
identity is its canonical JSON (:func:`settings_key`), which is what resumed runs match on.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

from coupled_sde.editing.registry import method_names, validate_settings

__all__ = ["expand", "load_settings", "settings_key", "settings_slug"]


def settings_key(settings: dict[str, Any]) -> str:
    """Canonical JSON of a setting (sorted keys, no spaces): its identity in result files."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def settings_slug(settings: dict[str, Any]) -> str:
    """A short, path-safe, readable folder name for a setting (``default``, ``guidance=1.5_start=4``)."""
    if not settings:
        return "default"
    text = "_".join(f"{k}={settings[k]}" for k in sorted(settings))
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", text)
    if len(slug) > 60 or slug != text:
        import hashlib

        return f"{slug[:40]}-{hashlib.sha1(settings_key(settings).encode()).hexdigest()[:8]}"
    return slug


def expand(spec: Any) -> list[dict[str, Any]]:
    """A list of settings from a list of dicts or a grid dict (list values are axes)."""
    if spec is None:
        return [{}]
    if isinstance(spec, list):
        out: list[dict[str, Any]] = []
        for item in spec:
            if not isinstance(item, dict):
                raise ValueError(f"each setting must be a mapping, got {item!r}")
            out.extend(expand(item) if any(isinstance(v, list) for v in item.values()) else [dict(item)])
        return out or [{}]
    if isinstance(spec, dict):
        axes = {k: (v if isinstance(v, list) else [v]) for k, v in spec.items()}
        if any(len(v) == 0 for v in axes.values()):
            raise ValueError(f"a grid axis is empty in {spec!r}")
        keys = list(axes)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]
    raise ValueError(f"settings must be a list of mappings or a grid mapping, got {type(spec).__name__}")


def _parse(spec: Any) -> Any:
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec).strip()
        if text.startswith(("[", "{")):
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"inline settings are not valid JSON: {e}") from None
        from .triplets import read_structured

        return read_structured(Path(text))
    return spec


def load_settings(spec: Any, methods: list[str] | tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """Each method's list of settings from ``spec`` (a path, inline JSON text, or parsed object).

    Raises ``ValueError`` for keys a method does not take and for per-method entries naming a
    method that is not being run. Duplicate settings are dropped (each would be the same edits).
    """
    for m in methods:
        if m not in method_names():
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(method_names())}")
    parsed = _parse(spec)
    if isinstance(parsed, dict) and parsed and set(parsed) <= set(method_names()):
        extra = sorted(set(parsed) - set(methods))
        if extra:
            raise ValueError(f"settings given for {extra}, which are not among the methods run ({list(methods)})")
        per_method = {m: expand(parsed.get(m)) for m in methods}
    else:
        common = expand(parsed)
        per_method = {m: [dict(s) for s in common] for m in methods}
    for method, settings in per_method.items():
        for s in settings:
            validate_settings(method, s)  # names, types and ranges, without a model
        per_method[method] = list({settings_key(s): s for s in settings}.values())
    return per_method
