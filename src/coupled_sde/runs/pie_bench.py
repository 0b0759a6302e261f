"""The PIE-Bench protocol (Ju et al. 2024, "PnP Inversion"; data and evaluation script in the
PnPInversion repository) in dataset runs.

PIE-Bench ships ``mapping_file.json``: one entry per image id, ``{"image_path": "0_random_140/000000000000.jpg",
"original_prompt": "a [cat] sitting ...", "editing_prompt": "a [dog] sitting ...", "editing_instruction": "...",
"editing_type_id": "0", "blended_word": "...", "mask": [start, length, start, length, ...]}``, the images under
``annotation_images/``. :func:`parse_pie_bench` turns it into :class:`~coupled_sde.runs.triplets.Triplet` s
(:func:`~coupled_sde.runs.triplets.load_triplets` detects the format): prompts without the ``[ ]``
markers, the edit type, the instruction and the run-length-encoded mask (for evaluation only: the
methods do not see it, as in the benchmark).

:func:`evaluate_pie_bench` scores a finished run folder the way ``evaluate.py`` does -- source image
against the saved edit, with the decoded mask -- into ``pie_bench.csv`` (:func:`scorable_edits`: which
edits, checked before any network is loaded);
:func:`coupled_sde.runs.summary.summarize_pie_bench` averages it per method, setting and edit type.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coupled_sde.metrics.pie_bench import PIE_METRICS

from .triplet import Triplet

__all__ = [
    "EDIT_TYPES",
    "PIE_COLUMNS",
    "decode_rle_mask",
    "evaluate_pie_bench",
    "is_pie_bench",
    "parse_pie_bench",
    "scorable_edits",
]

#: PIE-Bench's ten editing types (``editing_type_id``), as its image folders name them.
EDIT_TYPES = {
    "0": "random",
    "1": "change object",
    "2": "add object",
    "3": "delete object",
    "4": "change attribute content",
    "5": "change attribute pose",
    "6": "change attribute color",
    "7": "change attribute material",
    "8": "change background",
    "9": "change style",
}

#: The annotation images are 512 x 512; the masks are encoded at that size.
PIE_SIZE = (512, 512)


def decode_rle_mask(encoded: Sequence[int], shape: tuple[int, int] = PIE_SIZE) -> np.ndarray:
    """PIE-Bench's ``mask_decode``: ``(start, length)`` pairs over the row-major flattened image set
    to 1 (runs clipped at the end), then the one-pixel border set to 1 ("to avoid annotation errors
    in boundary", as the script says). Float64 ``(H, W)`` of 0/1; 1 = edited region."""
    if len(encoded) % 2:
        raise ValueError(f"a PIE-Bench mask is a list of (start, length) pairs, got {len(encoded)} numbers")
    length = shape[0] * shape[1]
    flat = np.zeros((length,))
    for start, run in zip(encoded[0::2], encoded[1::2]):
        start, run = int(start), int(run)
        if start < 0 or run < 0:
            raise ValueError(f"negative start or length in a PIE-Bench mask: ({start}, {run})")
        flat[start : start + min(run, length - start)] = 1
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = 1
    mask[:, 0] = mask[:, -1] = 1
    return mask


def is_pie_bench(data: Any) -> bool:
    """Whether parsed JSON looks like PIE-Bench's mapping file (id -> entry with its keys)."""
    if not isinstance(data, dict) or not data:
        return False
    first = next(iter(data.values()))
    return isinstance(first, dict) and {"image_path", "original_prompt", "editing_prompt"} <= set(first)


def parse_pie_bench(
    data: dict[str, Any],
    base: str | os.PathLike = ".",
    image_root: str | os.PathLike | None = None,
    edit_types: Sequence[str] | None = None,
) -> list[Triplet]:
    """Triplets from PIE-Bench's parsed mapping file; ``edit_types`` keeps only those ``editing_type_id`` s.

    Images are looked up under ``image_root``, else ``<base>/annotation_images`` (PIE-Bench's layout:
    ``data/mapping_file.json`` next to ``data/annotation_images/``), else ``base``. All missing
    images are reported together.
    """
    base_dir = Path(base).expanduser()
    roots = [Path(image_root).expanduser()] if image_root is not None else [base_dir / "annotation_images", base_dir]
    keep = None if edit_types is None else {str(t) for t in edit_types}
    triplets, missing = [], []
    for key, entry in data.items():
        for field in ("image_path", "original_prompt", "editing_prompt"):
            if field not in entry:
                raise ValueError(f"PIE-Bench entry {key!r} has no {field!r}")
        kind = str(entry.get("editing_type_id", ""))
        if keep is not None and kind not in keep:
            continue
        image = next((r / entry["image_path"] for r in roots if (r / entry["image_path"]).is_file()), None)
        if image is None:
            missing.append(str(roots[0] / entry["image_path"]))
            continue
        rle = entry.get("mask")
        triplets.append(
            Triplet(
                id=str(key),
                image=image,
                source_prompt=" ".join(_strip(entry["original_prompt"]).split()),
                target_prompt=" ".join(_strip(entry["editing_prompt"]).split()),
                edit_type=kind or None,
                instruction=entry.get("editing_instruction"),
                eval_mask=None if rle is None else tuple(int(v) for v in rle),
            )
        )
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} PIE-Bench image(s) not found: {shown}. Pass image_root= (--image-root)")
    return triplets


def _strip(prompt: str) -> str:
    return str(prompt).replace("[", "").replace("]", "")


#: Columns of ``pie_bench.csv``: the edit's key, its edit type, then the metrics (empty when skipped).
PIE_COLUMNS = ("triplet_id", "method", "settings", "seed", "edit_type", *PIE_METRICS)


def scorable_edits(run_dir: str | os.PathLike, triplets: Sequence[Triplet]) -> list[tuple[dict[str, str], Triplet]]:
    """The finished edits of ``run_dir`` that PIE-Bench can score, each with its triplet, in the dataset's order.

    One entry per edit (a run folder merged with its shard files kept lists each edit twice);
    failed edits are left out. Raises before anything is scored -- ``FileNotFoundError`` without a
    run folder or result files in it, ``ValueError`` when no triplet carries a PIE-Bench mask (the
    dataset is not PIE-Bench's mapping file) or no finished edit belongs to one that does (another
    dataset's run) -- so that callers can check a run before loading the metric networks.
    """
    from .results import read_run

    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder {str(run)!r}")
    rows = read_run(run)
    order = {t.id: n for n, t in enumerate(triplets) if t.eval_mask is not None}
    if not order:
        raise ValueError("none of the triplets carries a PIE-Bench mask: load the dataset from PIE-Bench's mapping file")
    by_id = {t.id: t for t in triplets}
    finished = [r for r in rows if not r.get("error") and r.get("output")]
    done = [r for r in finished if r["triplet_id"] in order]
    if not done:
        raise ValueError(
            f"no finished edit in {str(run)!r} belongs to a PIE-Bench triplet of this dataset "
            f"({len(rows)} edit(s) in its results, {len(finished)} finished)"
        )
    done.sort(key=lambda r: order[r["triplet_id"]])  # stable: triplet-major, each source image loaded once
    return [(r, by_id[r["triplet_id"]]) for r in done]


def evaluate_pie_bench(
    run_dir: str | os.PathLike, triplets: Sequence[Triplet], metrics: Any, out: str | os.PathLike | None = None
) -> Path:
    """Score every finished edit of ``run_dir`` whose triplet carries a PIE-Bench mask; write ``pie_bench.csv``.

    ``metrics`` is a :class:`~coupled_sde.metrics.pie_bench.PieBenchMetrics` or the name ``"tiny"``.
    The edits are :func:`scorable_edits` (its errors are raised before any network is built). Each
    edit is read back from its saved image and compared with the source image at the source's
    size (an edit of another size, from a resized run, is resized back). Rewritten from scratch on
    every call (it is derived from the run's files).
    """
    import torch

    from coupled_sde.io import load_image
    from coupled_sde.metrics._image import resize
    from coupled_sde.metrics.pie_bench import PieBenchMetrics

    if isinstance(metrics, str) and metrics != "tiny":
        raise ValueError(f"unknown PIE-Bench metrics {metrics!r}: pass 'tiny' or a PieBenchMetrics")
    run = Path(run_dir).expanduser()
    edits = scorable_edits(run, triplets)
    if isinstance(metrics, str):
        metrics = PieBenchMetrics.tiny(0)
    columns = PIE_COLUMNS
    target = Path(out) if out is not None else run / "pie_bench.csv"
    sources: dict[str, Any] = {}
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row, t in edits:
            if t.id not in sources:
                x = load_image(t.image)
                mask = torch.from_numpy(decode_rle_mask(t.eval_mask, tuple(x.shape[-2:]))).float()
                sources = {t.id: (x, mask)}  # one source at a time: the edits are triplet-major
            x, mask = sources[t.id]
            edited = load_image(run / row["output"])
            if edited.shape != x.shape:
                edited = resize(edited, tuple(x.shape[-2:])).clamp(-1.0, 1.0)
            with torch.inference_mode():
                scores = metrics(x, edited, mask, [t.source_prompt], [t.target_prompt])
            record = {c: row[c] for c in ("triplet_id", "method", "settings", "seed")}
            record["edit_type"] = t.edit_type or ""
            for name, value in scores.items():
                v = float(value.reshape(-1)[0])
                record[name] = "nan" if math.isnan(v) else repr(v)
            writer.writerow({c: record.get(c, "") for c in columns})
    return target
