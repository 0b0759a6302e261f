"""Datasets of edits: (image, source prompt, target prompt) triplets from JSON or YAML files.

Two formats, detected per entry, so files can mix them:

* ours: ``[{"image": "cat.png", "source_prompt": "...", "target_prompt": "...", "mask": "m.png", "id": "cat-dog"}]``
  (``mask`` and ``id`` optional);
* PIE-Bench's ``mapping_file.json`` (a mapping from image id to ``image_path``, ``original_prompt``,
  ``editing_prompt``, ``editing_type_id``, RLE ``mask``, ...): see :mod:`coupled_sde.runs.pie_bench`
  (the whole file is in that format or not);
* FlowEdit's (``edits.yaml`` / ``Data/flowedit.yaml`` of github.com/fallenshock/FlowEdit): one entry
  per image with ``input_img`` (or ``init_img``), ``source_prompt``, a list ``target_prompts`` and
  ``target_codes`` naming each edit; every target prompt becomes one triplet.

The loader is tolerant of what such files contain in practice: a top-level ``{"triplets": [...]}``
(or ``edits``) wrapper, a single target given as a string, missing or too few target codes, YAML's
folded multi-line prompts and doubled apostrophes (``other''s`` in plain scalars), and image paths
written relative to another folder (FlowEdit's file says ``flowedit_data/bear.png`` for
``Data/Images/bear.png``): an image is looked up next to the dataset file, under ``image_root``,
and by file name in ``image_root``, the dataset folder and its ``Images``/``images`` subfolders.

Each triplet gets a stable id (used for resuming and file names): the entry's ``id``, or
``<image stem>-<target code>``, or ``<image stem>-<8 hex digits of the prompts' hash>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from .triplet import Triplet

__all__ = ["Triplet", "load_triplets", "parse_triplets", "read_structured"]

_IMAGE_KEYS = ("image", "input_img", "init_img", "source_image", "image_path", "img")
_SOURCE_KEYS = ("source_prompt", "source", "src_prompt")
_TARGET_KEYS = ("target_prompt", "target_prompts", "target", "tgt_prompt")
_WRAPPERS = ("triplets", "edits", "data", "items")


def read_structured(path: str | os.PathLike) -> Any:
    """Parse a ``.json``, ``.yaml`` or ``.yml`` file (anything else: JSON, then YAML)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"file not found: {str(p)!r}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(p)!r} is not valid JSON: {e}") from None
    if p.suffix.lower() not in (".yaml", ".yml"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    from coupled_sde._optional import require

    require("yaml", "diffusers")
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{str(p)!r} is not valid YAML: {e}") from None


def _clean(prompt: Any) -> str:
    """Collapse whitespace (YAML folding leaves runs of spaces) and undo doubled apostrophes."""
    if prompt is None:
        return ""
    return " ".join(str(prompt).split()).replace("''", "'")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "x"


def _digest(*texts: str) -> str:
    return hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:8]


def _first(entry: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in entry and entry[key] is not None:
            return key, entry[key]
    return None, None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _resolve(raw: str, base: Path, image_root: Path | None) -> tuple[Path | None, list[Path]]:
    """Find a file the dataset names; return it (or ``None``) and the places tried."""
    given = Path(str(raw).strip()).expanduser()
    candidates = [given] if given.is_absolute() else [base / given]
    if image_root is not None and not given.is_absolute():
        candidates.append(image_root / given)
    name = given.name
    for folder in ([image_root] if image_root is not None else []) + [base, base / "Images", base / "images"]:
        candidates.append(folder / name)
    candidates = list(dict.fromkeys(candidates))
    for c in candidates:
        if c.is_file():
            return c, candidates
    return None, candidates


def parse_triplets(entries: Any, base: str | os.PathLike = ".", image_root: str | os.PathLike | None = None) -> list[Triplet]:
    """Triplets from already-parsed entries; paths are resolved against ``base`` (see module docstring)."""
    if isinstance(entries, dict):
        for key in _WRAPPERS:
            if isinstance(entries.get(key), list):
                entries = entries[key]
                break
        else:
            entries = [entries]  # a single entry
    if not isinstance(entries, list):
        raise ValueError(f"a dataset must be a list of entries, got {type(entries).__name__}")
    base_dir, root = Path(base).expanduser(), None if image_root is None else Path(image_root).expanduser()
    triplets: list[Triplet] = []
    missing: list[str] = []
    for n, entry in enumerate(entries):
        if entry is None:  # an empty YAML item ("-" followed by nothing)
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"dataset entry {n} must be a mapping, got {type(entry).__name__}: {entry!r}")
        _, raw_image = _first(entry, _IMAGE_KEYS)
        if raw_image is None:
            raise ValueError(f"dataset entry {n} has no image (expected one of the keys {list(_IMAGE_KEYS)})")
        _, source = _first(entry, _SOURCE_KEYS)
        if source is None:
            raise ValueError(f"dataset entry {n} ({raw_image}) has no source_prompt")
        _, targets = _first(entry, _TARGET_KEYS)
        targets = [_clean(t) for t in _as_list(targets)]
        if not targets:
            raise ValueError(f"dataset entry {n} ({raw_image}) has no target_prompt / target_prompts")
        codes = [str(c) for c in _as_list(entry.get("target_codes"))]
        if len(codes) > len(targets):
            raise ValueError(f"dataset entry {n} ({raw_image}) has {len(codes)} target_codes for {len(targets)} target prompts")
        image, tried = _resolve(str(raw_image), base_dir, root)
        if image is None:
            missing.append(f"{raw_image} (looked in: {', '.join(str(t) for t in tried[:3])}, ...)")
            image = base_dir / str(raw_image)
        mask = None
        if entry.get("mask"):
            mask, tried = _resolve(str(entry["mask"]), base_dir, root)
            if mask is None:
                missing.append(f"mask {entry['mask']}")
        src = _clean(source)
        stem = _slug(Path(str(raw_image)).stem)
        for k, target in enumerate(targets):
            if entry.get("id") is not None and len(targets) == 1:
                tid = _slug(str(entry["id"]))
            elif k < len(codes):
                tid = f"{stem}-{_slug(codes[k])}"
            else:
                tid = f"{stem}-{_digest(src, target)}"
            triplets.append(Triplet(tid, image, src, target, mask))
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{len(missing)} dataset file(s) not found: {shown}. Pass --image-root (image_root=) to say where they are"
        )
    return _unique(triplets)


def _unique(triplets: list[Triplet]) -> list[Triplet]:
    """Make ids unique (``-2``, ``-3`` in file order), warning once: ids key resumed runs."""
    seen: dict[str, int] = {}
    out: list[Triplet] = []
    clashes = 0
    for t in triplets:
        count = seen.get(t.id, 0) + 1
        seen[t.id] = count
        if count > 1:
            clashes += 1
            t = replace(t, id=f"{t.id}-{count}")
        out.append(t)
    if clashes:
        warnings.warn(f"{clashes} triplet id(s) repeated in the dataset; suffixed with -2, -3, ... in file order", stacklevel=3)
    return out


def load_triplets(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[Triplet]:
    """Read a dataset file (JSON or YAML: ours, FlowEdit's or PIE-Bench's mapping file) into :class:`Triplet` s.

    Image and mask paths are resolved relative to the file's folder (and ``image_root``); all
    missing files are reported together in one ``FileNotFoundError``.
    """
    p = Path(path).expanduser()
    data = read_structured(p)
    from .pie_bench import is_pie_bench, parse_pie_bench

    if is_pie_bench(data):
        triplets = parse_pie_bench(data, p.parent, image_root)
    else:
        triplets = parse_triplets(data, p.parent, image_root)
    if not triplets:
        raise ValueError(f"the dataset {str(p)!r} contains no triplets")
    return triplets
