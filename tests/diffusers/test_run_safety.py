"""Dataset runs under trouble: undecodable images, two runs on one folder, retries, leftovers, SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from run_datasets import failing_on_the_last_target, save_image, write_dataset

from coupled_sde.editing import api as image_api
from coupled_sde.io import image_size
from coupled_sde.runs import (
    FolderLock,
    ResultsWriter,
    RunLockedError,
    clean_stale_tmp,
    compact_results,
    load_triplets,
    read_results,
    run_dataset,
)
from coupled_sde.runs.results import COLUMNS

FAST = {"steps": 2, "start": 1}  # one model call per edit
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _undecodable_image(path: Path, size: int = 32) -> None:
    """A JPEG cut inside its scan: its header reads (the size check before the model load passes), its pixels do not decode."""
    import io

    noise = torch.randint(0, 256, (size, size, 3), generator=torch.Generator().manual_seed(9), dtype=torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise.numpy()).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    path.write_bytes(data[: data.index(b"\xff\xda") + 64])  # up to just after the start of the scan


def _keys(rows):
    return Counter((r["triplet_id"], r["method"], r["settings"], r["seed"]) for r in rows)


def test_an_image_that_fails_to_decode_is_an_error_row_and_the_run_goes_on(flux, tmp_path):
    data = write_dataset(tmp_path / "data", n=3)
    broken = tmp_path / "data" / "img1.png"
    _undecodable_image(broken)
    assert image_size(broken) == (32, 32)
    triplets = load_triplets(data)
    report = run_dataset(flux, triplets, tmp_path / "run", settings=FAST, seeds=[0, 1], progress=False, log=None)
    assert (report.edited, report.failed) == (4, 2)
    rows = read_results(tmp_path / "run")
    failed = [r for r in rows if r["error"]]
    assert {r["triplet_id"] for r in failed} == {triplets[1].id} and len(failed) == 2
    assert "img1.png" in failed[0]["error"] and failed[0]["output"] == ""
    assert all((tmp_path / "run" / r["output"]).is_file() for r in rows if not r["error"])

    save_image(broken, 1)  # repaired: the rerun redoes only the two failures, and their rows replace the failed ones
    report = run_dataset(flux, triplets, tmp_path / "run", settings=FAST, seeds=[0, 1], progress=False, log=None)
    assert (report.edited, report.skipped, report.failed) == (2, 4, 0)
    rows = read_results(tmp_path / "run")
    assert len(rows) == 6 and set(_keys(rows).values()) == {1} and not any(r["error"] for r in rows)


def test_a_retry_replaces_its_failed_row(flux, tmp_path, monkeypatch):
    triplets = load_triplets(write_dataset(tmp_path / "data"))
    flaky = failing_on_the_last_target(image_api.edit_tensor)
    with monkeypatch.context() as m:
        m.setattr(image_api, "edit_tensor", flaky)
        for _ in range(3):  # fails three times: one failed row, the latest, not three
            run_dataset(flux, triplets, tmp_path / "run", settings=FAST, progress=False, log=None)
    rows = read_results(tmp_path / "run")
    assert len(rows) == 3 and sum(bool(r["error"]) for r in rows) == 1
    report = run_dataset(flux, triplets, tmp_path / "run", settings=FAST, progress=False, log=None)
    assert (report.edited, report.skipped, report.failed) == (1, 2, 0)
    rows = read_results(tmp_path / "run")
    assert len(rows) == 3 and not any(r["error"] for r in rows)


def test_compact_keeps_one_row_per_edit(tmp_path):
    path = tmp_path / "results.csv"
    base = {"method": "sync-sde", "settings": "{}", "seed": 0}
    with ResultsWriter(path) as w:
        w.write({**base, "triplet_id": "a", "error": "E: first"})
        w.write({**base, "triplet_id": "a", "output": "a.png"})
        w.write({**base, "triplet_id": "a", "output": "a-again.png"})  # a doubled success (two runs at once, before locks)
        w.write({**base, "triplet_id": "b", "error": "E: old"})
        w.write({**base, "triplet_id": "b", "error": "E: new"})
        w.write({**base, "triplet_id": "c", "error": "E: will retry"})
    assert compact_results(path, retry={("c", "sync-sde", "{}", "0")}) == 4
    rows = read_results(path)
    assert [(r["triplet_id"], r["output"], r["error"]) for r in rows] == [("a", "a.png", ""), ("b", "", "E: new")]
    assert compact_results(path) == 0
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_second_run_on_the_same_folder_fails_at_once(flux, tmp_path, monkeypatch):
    triplets = load_triplets(write_dataset(tmp_path / "data", n=1))
    out = tmp_path / "run"
    with FolderLock(out / "results.csv"):  # a run in progress (flock: another open file description conflicts)
        monkeypatch.setattr(image_api, "as_backbone", lambda *a, **k: pytest.fail("loaded"))
        with pytest.raises(RunLockedError, match=rf"another run \(pid {os.getpid()}\) is writing .*results\.csv"):
            run_dataset(flux, triplets, out, settings=FAST, progress=False, log=None)
        # another shard writes another file: allowed
        monkeypatch.undo()
        assert run_dataset(flux, triplets, out, settings=FAST, shards=2, shard_index=0, progress=False, log=None).edited == 1
    assert run_dataset(flux, triplets, out, settings=FAST, progress=False, log=None).skipped == 1  # lock released


def test_stale_temporary_files_are_removed(flux, tmp_path):
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale = [out / f".results.csv.{dead.pid}.tmp", out / "images" / "sync-sde" / "default" / f".x-seed0.png.{dead.pid}.tmp"]
    live = out / "images" / f".y.png.{os.getpid()}.tmp"  # a live writer's (e.g. another shard's) file is kept
    for p in [*stale, live]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    assert sorted(clean_stale_tmp(out)) == sorted(stale)
    assert live.exists()
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    run_dataset(flux, load_triplets(write_dataset(tmp_path / "data", n=1)), out, settings=FAST, progress=False, log=None)
    assert not any(p.exists() for p in stale)


_RUNNER = """
import sys, torch
torch.set_num_threads(1)
from coupled_sde.runs import load_triplets, run_dataset
run_dataset(sys.argv[1], load_triplets(sys.argv[2]), sys.argv[3], settings={"steps": 2, "start": 1}, seeds=list(range(6)),
            methods=["sync-sde", "sdedit"], progress=False, log=None)
"""


def _sigkill_rounds(flux_pipe, tmp_path: Path, kills: int) -> None:
    """Kill a run with SIGKILL at random moments ``kills`` times, then let it finish: every edit exactly once."""
    model = tmp_path / "tiny-flux"
    flux_pipe.save_pretrained(model)
    data = write_dataset(tmp_path / "data", n=4)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-c", _RUNNER, str(model), str(data), str(out)]
    rng = random.Random(0)
    rows_before = 0
    for _ in range(kills):
        p = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until it edits (the CSV grows), then kill it at a random moment
            csv = out / "results.csv"
            if csv.is_file() and csv.stat().st_size > 0 and len(read_results(csv)) > rows_before:
                break
            if p.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        rows = read_results(out)
        assert set(_keys(rows).values()) <= {1}, "an edit was recorded twice"
        assert all((out / r["output"]).is_file() for r in rows), "a row without its image"
        rows_before = len(rows)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_results(out)
    assert len(rows) == 4 * 2 * 6 and set(_keys(rows).values()) == {1} and not any(r["error"] for r in rows)
    with open(out / "results.csv", encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 1 + 48  # no half-written line anywhere
    assert not list(out.rglob("*.tmp"))
    pngs = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert {r["output"] for r in rows} <= pngs


@pytest.mark.slow  # about a minute per kill on a loaded 2-core machine (each process imports diffusers)
def test_sigkill_eight_times_loses_and_doubles_nothing(flux_pipe, tmp_path):
    _sigkill_rounds(flux_pipe, tmp_path, kills=8)
