"""The PIE-Bench protocol end to end on a tiny synthetic PIE-style set: its mapping file is loaded
next to the other formats, the methods run (without seeing the evaluation mask), the edits are
scored with PIE-Bench's metrics (tiny random networks) and summarised per edit type."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coupled_sde.runs import evaluate_pie_bench, load_triplets, run_dataset, summarize_pie_bench
from coupled_sde.runs.pie_bench import decode_rle_mask

SIZE = 32


def _rle(mask: np.ndarray) -> list[int]:
    """Encode a binary mask as PIE-Bench's (start, length) runs over the row-major flattened image."""
    flat = np.concatenate([[0], mask.reshape(-1).astype(int), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def _pie_set(root: Path) -> Path:
    entries = {}
    folders = {"0": "0_random_140", "1": "1_change_object_80", "9": "9_change_style_80"}
    for n, (kind, folder) in enumerate(folders.items()):
        key = f"{n:012d}"
        g = torch.Generator().manual_seed(n)
        pixels = torch.randint(0, 256, (SIZE, SIZE, 3), generator=g, dtype=torch.uint8).numpy()
        path = root / "annotation_images" / folder / f"{key}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        mask = np.zeros((SIZE, SIZE))
        mask[8 : 8 + 4 * (n + 1), 6:20] = 1
        entries[key] = {
            "image_path": f"{folder}/{key}.jpg",
            "original_prompt": "a [cat] sitting on a wooden table",
            "editing_prompt": f"a [dog] sitting on a wooden table {n}",
            "editing_instruction": "make the cat a dog",
            "editing_type_id": kind,
            "blended_word": "cat dog",
            "mask": _rle(mask),
        }
    path = root / "mapping_file.json"
    path.write_text(json.dumps(entries))
    return path


def test_pie_bench_layout_runs_and_is_scored_per_edit_type(flux, tmp_path):
    mapping = _pie_set(tmp_path / "data")
    triplets = load_triplets(mapping)
    assert [t.edit_type for t in triplets] == ["0", "1", "9"]
    assert triplets[0].source_prompt == "a cat sitting on a wooden table" and triplets[0].mask is None
    expected = np.zeros((SIZE, SIZE))
    expected[8:12, 6:20] = 1
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 1
    assert np.array_equal(decode_rle_mask(triplets[0].eval_mask, (SIZE, SIZE)), expected)

    out = tmp_path / "run"
    settings = {"sync-sde": {"steps": 2, "start": 1}, "rf-inversion": {"steps": 2}}
    report = run_dataset(flux, triplets, out, methods=["sync-sde", "rf-inversion"], settings=settings, progress=False, log=None)
    assert report.edited == 6 and report.failed == 0
    scores = evaluate_pie_bench(out, triplets, "tiny")
    with open(scores, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["edit_type"] for r in rows} == {"0", "1", "9"}
    for r in rows:
        for column in ("structure_distance", "psnr_unedit_part", "ssim_unedit_part", "clip_similarity_target_image_edit_part"):
            assert math.isfinite(float(r[column])), (column, r)
    table = summarize_pie_bench(out)
    kinds = [(r["method"], r["edit_type"]) for r in table.rows]
    assert ("rf-inversion", "all") in kinds and ("sync-sde", "9 change style") in kinds
    everything = next(r for r in table.rows if r["method"] == "sync-sde" and r["edit_type"] == "all")
    assert everything["edits"] == 3
    mean_psnr = np.mean([float(r["psnr_unedit_part"]) for r in rows if r["method"] == "sync-sde"])
    assert everything["psnr_unedit_part"] == pytest.approx(mean_psnr)


def test_pie_bench_missing_images_are_reported_together(tmp_path):
    mapping = _pie_set(tmp_path / "data")
    for p in (tmp_path / "data" / "annotation_images").rglob("*.jpg"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match="3 PIE-Bench image"):
        load_triplets(mapping)
