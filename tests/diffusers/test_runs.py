"""Dataset runs (coupled_sde.runs): resuming, failures, loaders, settings, shards, merge, accelerate, summary."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from run_datasets import failing_on_the_last_target, save_image, write_dataset

from coupled_sde import cli
from coupled_sde.editing import api as image_api
from coupled_sde.runs import (
    ResultsWriter,
    load_settings,
    load_triplets,
    merge_results,
    plot_frontier,
    read_results,
    run_dataset,
    summarize,
)

FAST = {"steps": 2, "start": 1}  # one model call per edit


@pytest.fixture(scope="module")
def flux_dir(flux_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-flux-runs")
    flux_pipe.save_pretrained(folder)
    return folder


class StubMetrics:
    """The call shape of ``coupled_sde.metrics.EditMetrics``: (source, edited, prompts) -> {name: (B,)}."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, source, edited, prompts):
        self.calls += 1
        d = (source - edited).abs().mean(dim=(1, 2, 3))
        return {"clip": 30.0 - d, "lpips": d, "dino": d / 2, "l1": d * 127.5}


@pytest.fixture()
def count_edits(monkeypatch):
    """Count the edits actually computed (the runner goes through image_api.edit_tensor)."""
    counter = Counter()
    real = image_api.edit_tensor

    def counting(backbone, image, source_prompt, target_prompt, method="sync-sde", **kw):
        counter[method] += 1
        return real(backbone, image, source_prompt, target_prompt, method, **kw)

    monkeypatch.setattr(image_api, "edit_tensor", counting)
    return counter


def _fail_loading(*args, **kwargs):
    raise AssertionError("the model was loaded")


def test_resume_after_interruption_recomputes_only_missing_rows(flux_dir, tmp_path, count_edits, monkeypatch):
    triplets = load_triplets(write_dataset(tmp_path / "data"))
    out = tmp_path / "run"
    kw = dict(methods=["sync-sde", "flowedit"], settings=FAST, metrics=StubMetrics(), progress=False, log=None)
    report = run_dataset(str(flux_dir), triplets, out, **kw)
    assert (report.edited, report.skipped, report.failed) == (6, 0, 0) and sum(count_edits.values()) == 6
    csv_path = out / "results.csv"
    rows = read_results(csv_path)
    assert len(rows) == 6 and all(r["lpips"] and r["clip"] and r["output"] for r in rows)
    assert all((out / r["output"]).is_file() for r in rows)
    assert rows[0]["model_calls"] == "1" and rows[1]["method"] == "flowedit"

    # interruption: only the first data row made it, plus half of the next line (a crash mid-write)
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text(lines[0] + lines[1] + lines[2][:25])
    count_edits.clear()
    report = run_dataset(str(flux_dir), triplets, out, **kw)
    assert (report.edited, report.skipped) == (5, 1) and sum(count_edits.values()) == 5
    again = read_results(csv_path)
    assert len(again) == 6 and again[0] == rows[0]
    assert len({(r["triplet_id"], r["method"], r["settings"], r["seed"]) for r in again}) == 6

    # finished: nothing to do, and the model is not even loaded
    monkeypatch.setattr(image_api, "load_backbone", _fail_loading)
    report = run_dataset(str(flux_dir), triplets, out, **kw)
    assert (report.edited, report.skipped) == (0, 6)

    table = summarize(out)
    assert [(r["method"], r["edits"], r["model_calls"]) for r in table.rows] == [("flowedit", 3, 1.0), ("sync-sde", 3, 1.0)]
    assert "lpips" in str(table) and table.rows[0]["clip"] is not None
    assert plot_frontier(out, tmp_path / "frontier.png").stat().st_size > 1000


def test_failed_edits_are_recorded_and_retried(flux, tmp_path, monkeypatch):
    triplets = load_triplets(write_dataset(tmp_path / "data"))
    flaky = failing_on_the_last_target(image_api.edit_tensor)
    with monkeypatch.context() as m:
        m.setattr(image_api, "edit_tensor", flaky)
        report = run_dataset(flux, triplets, tmp_path / "run", settings=FAST, progress=False, log=None)
    assert (report.edited, report.failed) == (2, 1)
    failed = [r for r in read_results(tmp_path / "run") if r["error"]]
    assert len(failed) == 1 and "FloatingPointError: diverged" in failed[0]["error"]
    report = run_dataset(flux, triplets, tmp_path / "run", settings=FAST, progress=False, log=None)
    assert (report.edited, report.skipped, report.failed) == (1, 2, 0)
    assert summarize(tmp_path / "run").rows[0]["edits"] == 3


FLOWEDIT_YAML = """\
-
    init_img:  flowedit_data/bear.png

    source_prompt: A large brown bear walking through a stream of water.
        The stream appears to be shallow.

    target_prompts:
     - A large black bear walking through a stream of water.
     - A large panda bear walking through a stream of water.

    target_codes:
     - 1_black_bear
     - 2_panda_bear

-

-
    input_img: Images/cat.png
    source_prompt: A dog and a cat enjoying each other''s company.
    target_prompts: A dog and a lego cat enjoying each other''s company.
-
    input_img: Images/cat.png
    source_prompt: A cat.
    target_prompts:
     - A tiger.
     - A lion.
    target_codes:
     - 1_tiger
"""


def test_flowedit_yaml_format(tmp_path):
    save_image(tmp_path / "Images" / "bear.png", 0)  # the file says flowedit_data/bear.png: found by name
    save_image(tmp_path / "Images" / "cat.png", 1)
    path = tmp_path / "flowedit.yaml"
    path.write_text(FLOWEDIT_YAML)
    triplets = load_triplets(path)
    assert [t.id for t in triplets][:2] == ["bear-1_black_bear", "bear-2_panda_bear"]
    assert len(triplets) == 5 and len({t.id for t in triplets}) == 5
    bear = triplets[0]
    assert bear.image == tmp_path / "Images" / "bear.png"
    assert bear.source_prompt == "A large brown bear walking through a stream of water. The stream appears to be shallow."
    assert triplets[2].target_prompt == "A dog and a lego cat enjoying each other's company."
    assert triplets[3].id == "cat-1_tiger" and triplets[4].id.startswith("cat-")  # fewer codes than prompts: hashed id
    assert triplets[2].id.startswith("cat-") and triplets[2].id != triplets[4].id


def test_our_format_and_loader_errors(tmp_path):
    save_image(tmp_path / "a.png", 0)
    save_image(tmp_path / "masks" / "a.png", 1)
    path = tmp_path / "d.json"
    entry = {"id": "first", "image": "a.png", "source_prompt": "x", "target_prompt": "y", "mask": "masks/a.png"}
    path.write_text(json.dumps({"triplets": [entry]}))
    (t,) = load_triplets(path)
    assert (t.id, t.mask) == ("first", tmp_path / "masks" / "a.png")

    path.write_text(json.dumps([{"image": f"missing{i}.png", "source_prompt": "x", "target_prompt": "y"} for i in range(7)]))
    with pytest.raises(FileNotFoundError, match=r"7 dataset file\(s\) not found: missing0.png.*and 2 more"):
        load_triplets(path)
    path.write_text(json.dumps([{"image": "a.png", "source_prompt": "x"}]))
    with pytest.raises(ValueError, match="no target_prompt"):
        load_triplets(path)
    path.write_text(json.dumps([{"image": "a.png", "source_prompt": "x", "target_prompts": ["y"], "target_codes": ["1", "2"]}]))
    with pytest.raises(ValueError, match="2 target_codes for 1"):
        load_triplets(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_triplets(tmp_path / "nope.json")


def test_settings_lists_grids_and_per_method(tmp_path):
    methods = ["sync-sde", "flowedit"]
    assert load_settings(None, methods) == {"sync-sde": [{}], "flowedit": [{}]}
    grid = load_settings({"start": [2, 4, 6], "steps": 28}, methods)["sync-sde"]
    assert grid == [{"start": 2, "steps": 28}, {"start": 4, "steps": 28}, {"start": 6, "steps": 28}]
    per = load_settings('{"sync-sde": [{"start": 2}, {"start": 2}], "flowedit": {"n_max": [20, 24]}}', methods)
    assert per == {"sync-sde": [{"start": 2}], "flowedit": [{"n_max": 20}, {"n_max": 24}]}
    file = tmp_path / "settings.yaml"
    file.write_text("sync-sde:\n  start: [2, 4]\n")
    assert load_settings(file, methods) == {"sync-sde": [{"start": 2}, {"start": 4}], "flowedit": [{}]}
    with pytest.raises(ValueError, match="does not take"):
        load_settings([{"coupling": "independent"}], methods)  # FlowEdit has no coupling
    with pytest.raises(ValueError, match="not among the methods"):
        load_settings({"sdedit": {}}, methods)


def test_shards_cover_every_triplet_once_and_merge(flux, tmp_path, monkeypatch):
    triplets = load_triplets(write_dataset(tmp_path / "data", n=5))
    out = tmp_path / "run"
    kw = dict(settings=FAST, seeds=[0, 1], progress=False, log=None)
    r0 = run_dataset(flux, triplets, out, shards=2, shard_index=0, **kw)
    r1 = run_dataset(flux, triplets, out, shards=2, shard_index=1, **kw)
    assert r0.results.name == "results.shard0.csv" and r1.results.name == "results.shard1.csv"
    assert (r0.edited, r1.edited) == (6, 4)  # triplets 0, 2, 4 and 1, 3, two seeds each
    ids0 = {r["triplet_id"] for r in read_results(r0.results)}
    ids1 = {r["triplet_id"] for r in read_results(r1.results)}
    assert not ids0 & ids1 and ids0 | ids1 == {t.id for t in triplets}
    merged = read_results(merge_results(out))
    keys = Counter((r["triplet_id"], r["seed"]) for r in merged)
    assert len(keys) == 10 and set(keys.values()) == {1}
    assert len(read_results(merge_results(out))) == 10  # merging again changes nothing
    monkeypatch.setattr(image_api, "as_backbone", _fail_loading)
    assert run_dataset(flux, triplets, out, **kw).skipped == 10  # unsharded rerun: all done


def test_one_model_per_output_folder(flux_dir, tmp_path):
    triplets = load_triplets(write_dataset(tmp_path / "data", n=1))
    run_dataset(str(flux_dir), triplets, tmp_path / "run", settings=FAST, progress=False, log=None)
    with pytest.raises(ValueError, match="holds results of model"):
        run_dataset(str(tmp_path / "other-model"), triplets, tmp_path / "run", settings=FAST, progress=False, log=None)


def test_results_writer_refuses_foreign_files(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other columns"):
        ResultsWriter(path)


@pytest.fixture()
def main(monkeypatch):
    """``cli.main`` with the ``run`` command registered (whatever the CLI's registration state)."""
    monkeypatch.setitem(cli.COMMANDS, "run", ("dataset", "dataset runs"))
    return cli.main


def test_cli_run_with_metrics_summarize_and_merge(main, flux_dir, tmp_path, capsys):
    pytest.importorskip("coupled_sde.metrics")
    data = write_dataset(tmp_path / "data", n=2)
    out = tmp_path / "run"
    base = ["run", "--model", str(flux_dir), "--dataset", str(data), "--out", str(out), "--quiet"]
    base += ["--settings", json.dumps(FAST), "--methods", "sync-sde,sdedit"]
    assert main([*base, "--metrics", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "4 edited" in printed and "sdedit" in printed and (out / "frontier.png").is_file()
    rows = read_results(out / "results.csv")
    assert len(rows) == 4 and all(abs(float(r[m])) < 1e4 for r in rows for m in ("clip", "lpips", "dino", "l1"))

    assert main(["run", "--summarize", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "sync-sde" in summary and "summary.csv" in summary and "frontier.png" in summary
    with open(out / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2

    sharded = tmp_path / "sharded"
    shard = ["run", "--model", str(flux_dir), "--dataset", str(data), "--out", str(sharded), "--quiet"]
    shard += ["--settings", json.dumps(FAST)]
    assert main([*shard, "--shards", "2", "--shard-index", "1"]) == 0
    assert main(["run", "--merge", str(sharded)]) == 0
    assert len(read_results(sharded / "results.csv")) == 1
    assert main(["run", "--out", str(out)]) == 1
    assert "--model, --dataset required" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_cpu_processes(flux_dir, tmp_path):
    """``accelerate launch`` with 2 processes on the CPU: one shard each, merged, every triplet once.

    (``accelerate launch --cpu --num_processes 2`` starts one process unless MPI is set up, so the
    torchrun-based launcher is used, with ``ACCELERATE_USE_CPU``.)
    """
    pytest.importorskip("accelerate")
    data = write_dataset(tmp_path / "data", n=5)
    out = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += ["-m", "coupled_sde", "run", "--accelerate", "--model", str(flux_dir), "--dataset", str(data), "--out", str(out)]
    command += ["--settings", json.dumps(FAST), "--device", "cpu", "--quiet"]
    # No wall-time assertion: on a loaded 2-core machine two processes each importing diffusers take
    # anywhere from 40 to 90 s; the timeout only guards against a hang.
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, textwrap.shorten(done.stderr[-3000:], 3000)
    assert "[shard 0/2]" in done.stdout + done.stderr and "[shard 1/2]" in done.stdout + done.stderr
    shard0, shard1 = read_results(out / "results.shard0.csv"), read_results(out / "results.shard1.csv")
    assert len(shard0) == 3 and len(shard1) == 2
    merged = read_results(out / "results.csv")
    assert Counter(r["triplet_id"] for r in merged) == Counter({t.id: 1 for t in load_triplets(data)})
    assert not any(r["error"] for r in merged)
