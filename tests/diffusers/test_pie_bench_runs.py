"""The PIE-Bench protocol end to end on a tiny synthetic PIE-style set: its mapping file is loaded
next to the other formats, the methods run (without seeing the evaluation mask), the edits are
scored with PIE-Bench's metrics (tiny random networks) and summarised per edit type -- from Python and
from the command line (``coupled-sde run --evaluate-pie-bench``), whose bad input fails in one line
before any metric network is built. One finished run serves the whole module (``pie_run``)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from run_datasets import write_dataset

from coupled_sde import cli
from coupled_sde.metrics.pie_bench import PIE_METRICS, PieBenchMetrics
from coupled_sde.runs import evaluate_pie_bench, load_triplets, run_dataset, summarize_pie_bench
from coupled_sde.runs.pie_bench import PIE_COLUMNS, decode_rle_mask, scorable_edits

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


@pytest.fixture(scope="module")
def pie_run(flux, tmp_path_factory):
    """One finished tiny FLUX run on the synthetic PIE-style set, shared by the module (copy it to write into it)."""
    root = tmp_path_factory.mktemp("pie")
    mapping = _pie_set(root / "data")
    triplets = load_triplets(mapping)
    settings = {"sync-sde": {"steps": 2, "start": 1}, "rf-inversion": {"steps": 2}}
    report = run_dataset(flux, triplets, root / "run", methods=["sync-sde", "rf-inversion"], settings=settings, progress=False, log=None)
    return SimpleNamespace(mapping=mapping, triplets=triplets, folder=root / "run", report=report)


@pytest.fixture()
def run_copy(pie_run, tmp_path):
    """A fresh copy of the finished run's folder, for a test that writes into it."""
    return Path(shutil.copytree(pie_run.folder, tmp_path / "run"))


def test_pie_bench_layout_runs_and_is_scored_per_edit_type(pie_run, run_copy):
    triplets = pie_run.triplets
    assert [t.edit_type for t in triplets] == ["0", "1", "9"]
    assert triplets[0].source_prompt == "a cat sitting on a wooden table" and triplets[0].mask is None
    expected = np.zeros((SIZE, SIZE))
    expected[8:12, 6:20] = 1
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 1
    assert np.array_equal(decode_rle_mask(triplets[0].eval_mask, (SIZE, SIZE)), expected)

    assert pie_run.report.edited == 6 and pie_run.report.failed == 0
    scores = evaluate_pie_bench(run_copy, triplets, "tiny")
    with open(scores, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["edit_type"] for r in rows} == {"0", "1", "9"}
    for r in rows:
        for column in ("structure_distance", "psnr_unedit_part", "ssim_unedit_part", "clip_similarity_target_image_edit_part"):
            assert math.isfinite(float(r[column])), (column, r)
    table = summarize_pie_bench(run_copy)
    kinds = [(r["method"], r["edit_type"]) for r in table.rows]
    assert ("rf-inversion", "all") in kinds and ("sync-sde", "9 change style") in kinds
    everything = next(r for r in table.rows if r["method"] == "sync-sde" and r["edit_type"] == "all")
    assert everything["edits"] == 3
    mean_psnr = np.mean([float(r["psnr_unedit_part"]) for r in rows if r["method"] == "sync-sde"])
    assert everything["psnr_unedit_part"] == pytest.approx(mean_psnr)


def test_a_merged_run_with_its_shard_files_is_scored_once_per_edit(pie_run, run_copy):
    """merge_results keeps the shard files by default: results.csv then lists every edit a second time."""
    results = (run_copy / "results.csv").read_text()
    (run_copy / "results.shard0.csv").write_text(results)
    edits = scorable_edits(run_copy, list(reversed(pie_run.triplets)))
    assert len(edits) == 6
    assert [t.id for _, t in edits] == [t.id for t in reversed(pie_run.triplets) for _ in range(2)]  # the dataset's order
    assert all(row["triplet_id"] == t.id for row, t in edits)


def test_pie_bench_missing_images_are_reported_together(tmp_path):
    mapping = _pie_set(tmp_path / "data")
    for p in (tmp_path / "data" / "annotation_images").rglob("*.jpg"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match="3 PIE-Bench image"):
        load_triplets(mapping)


# --- the command line: coupled-sde run --evaluate-pie-bench DIR --dataset mapping_file.json ---------------------------


def _evaluate(pie_run, folder, *extra):
    return ["run", "--evaluate-pie-bench", str(folder), "--dataset", str(pie_run.mapping), *extra]


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_cli_scores_a_finished_run_as_the_python_functions_do(pie_run, run_copy, tmp_path, capsys):
    stale = run_copy / "pie_bench_summary.csv"
    stale.write_text("an old summary\n")  # derived: overwritten
    assert cli.main(_evaluate(pie_run, run_copy, "--pie-metrics", "tiny")) == 0
    printed = capsys.readouterr().out
    assert f"scores: {run_copy / 'pie_bench.csv'}" in printed and f"summary: {stale}" in printed
    assert "9 change style" in printed and "psnr_unedit_part" in printed

    api_scores = evaluate_pie_bench(pie_run.folder, pie_run.triplets, PieBenchMetrics.tiny(0), out=tmp_path / "api.csv")
    assert _csv_rows(run_copy / "pie_bench.csv") == _csv_rows(api_scores)
    api_summary = summarize_pie_bench(api_scores).write_csv(tmp_path / "api_summary.csv")
    summary = _csv_rows(stale)
    assert summary == _csv_rows(api_summary)
    assert len(summary) == 8 and {r["edit_type"] for r in summary} == {"all", "0 random", "1 change object", "9 change style"}
    assert all(math.isfinite(float(r["structure_distance"])) for r in summary)


def _save_tiny_networks(folder: Path) -> dict[str, str]:
    """PieBenchMetrics.tiny(0)'s networks as local checkpoints: a CLIP folder, a ViT folder, one LPIPS state dict."""
    from coupled_sde.metrics._tiny import clip_image_processor_class

    tiny = PieBenchMetrics.tiny(0)
    tiny.clip.model.save_pretrained(folder / "clip")
    tiny.clip.tokenizer.save_pretrained(folder / "clip")
    clip_image_processor_class()(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(folder / "clip")
    tiny.structure.model.save_pretrained(folder / "vit")
    torch.save(tiny.lpips.state_dict(), folder / "lpips.pth")  # features.* and lins.* keys: both files' layouts
    return {"clip": str(folder / "clip"), "vit": str(folder / "vit"), "lpips": str(folder / "lpips.pth")}


def _assert_same_scores(rows, expected):
    """pie_bench.csv rows alike: the same edits in the same order, scores equal up to float rounding (empty = skipped)."""
    keys = [c for c in PIE_COLUMNS if c not in PIE_METRICS]
    assert [[r[c] for c in keys] for r in rows] == [[r[c] for c in keys] for r in expected]
    for row, want in zip(rows, expected):
        for column in PIE_METRICS:
            assert (row[column] == "") == (want[column] == ""), (column, row, want)
            if want[column]:
                assert float(row[column]) == pytest.approx(float(want[column]), rel=1e-5), (column, row, want)


def test_cli_paper_metrics_load_local_checkpoints(pie_run, run_copy, tmp_path, capsys):
    """--pie-metrics paper with local folders and files: the tiny networks saved and loaded back score the same
    (CLIP up to float rounding: the loaded model picks its own attention kernel); without --lpips-squeeze the
    LPIPS column is skipped, with a note."""
    saved = _save_tiny_networks(tmp_path / "nets")
    expected = _csv_rows(evaluate_pie_bench(pie_run.folder, pie_run.triplets, "tiny", out=tmp_path / "tiny.csv"))
    local = ["--pie-metrics", "paper", "--clip-model", saved["clip"], "--structure-model", saved["vit"], "--device", "cpu"]
    assert cli.main(_evaluate(pie_run, run_copy, *local, "--lpips-squeeze", saved["lpips"], saved["lpips"])) == 0
    _assert_same_scores(_csv_rows(run_copy / "pie_bench.csv"), expected)
    assert "note:" not in capsys.readouterr().err

    assert cli.main(_evaluate(pie_run, run_copy, *local)) == 0
    assert "no --lpips-squeeze" in capsys.readouterr().err
    rows = _csv_rows(run_copy / "pie_bench.csv")
    assert all(r["lpips_unedit_part"] == "" for r in rows)
    _assert_same_scores(rows, [{**r, "lpips_unedit_part": ""} for r in expected])
    assert "lpips_unedit_part" not in _csv_rows(run_copy / "pie_bench_summary.csv")[0]


@pytest.fixture()
def no_networks(monkeypatch):
    """Fail the test if a metric network is built."""

    def fail(*args, **kwargs):
        raise AssertionError("a metric network was loaded")

    monkeypatch.setattr(PieBenchMetrics, "tiny", fail)
    monkeypatch.setattr(PieBenchMetrics, "from_pretrained", fail)


def _one_line_error(capsys, needle):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("coupled-sde run: error: ") and "Traceback" not in err, err
    assert needle in err, err


def _other_dataset(pie_run, tmp_path):
    """PIE-Bench's layout, but none of the run's image ids."""
    entries = json.loads(pie_run.mapping.read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({f"9{key}": entry for key, entry in entries.items()}))
    return other


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing folder", "no run folder"),
        ("empty folder", "no results.csv or results.shard*.csv in"),
        ("our format", "none of the triplets carries a PIE-Bench mask"),
        ("another dataset", "no finished edit in"),
        ("no --dataset", "--evaluate-pie-bench needs --dataset"),
        ("missing weight file", "--lpips-squeeze: no such file"),
        ("missing clip folder", "--clip-model: no such folder"),
        ("with --model", "cannot be combined with --model"),
        ("with --out and --summarize", "cannot be combined with --out, --summarize"),
        ("missing device", "--device cuda:7"),
    ],
)
def test_cli_bad_input_is_one_line_before_any_network(pie_run, run_copy, tmp_path, capsys, no_networks, case, needle):
    args = _evaluate(pie_run, run_copy, "--pie-metrics", "tiny")
    if case == "missing folder":
        args[2] = str(tmp_path / "nowhere")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        args[2] = str(tmp_path / "empty")
    elif case == "our format":
        args[4] = str(write_dataset(tmp_path / "ours"))
    elif case == "another dataset":
        args[4] = str(_other_dataset(pie_run, tmp_path))
        args += ["--image-root", str(pie_run.mapping.parent / "annotation_images")]
    elif case == "no --dataset":
        del args[3:5]
    elif case == "missing weight file":
        args += ["--lpips-squeeze", str(tmp_path / "squeezenet.pth"), str(tmp_path / "squeeze.pth")]
    elif case == "missing clip folder":
        args += ["--pie-metrics", "paper", "--clip-model", str(tmp_path / "clip")]
    elif case == "with --model":
        args += ["--model", "tiny-flux"]
    elif case == "with --out and --summarize":
        args += ["--out", str(tmp_path / "out"), "--summarize", str(run_copy)]
    elif case == "missing device":
        args += ["--device", "cuda:7"]
    assert cli.main(args) == 1
    _one_line_error(capsys, needle)
    assert not (run_copy / "pie_bench.csv").exists() and not (run_copy / "pie_bench_summary.csv").exists()


def test_cli_metric_models_offline_and_missing_extra_fail_before_loading(pie_run, tmp_path, capsys, monkeypatch, no_networks):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(_evaluate(pie_run, pie_run.folder)) == 1  # the default --pie-metrics paper, hub ids
    _one_line_error(capsys, "--clip-model 'openai/clip-vit-large-patch14' is not in the local Hugging Face cache")
    assert cli.main(_evaluate(pie_run, pie_run.folder, "--clip-model", str(tmp_path))) == 1
    _one_line_error(capsys, "--structure-model 'facebook/dino-vitb8' is not in the local Hugging Face cache")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "transformers" else real(name, *a, **k))
    assert cli.main(_evaluate(pie_run, pie_run.folder, "--pie-metrics", "tiny")) == 1
    _one_line_error(capsys, 'pip install "coupled-sde[metrics]"')
    assert not (pie_run.folder / "pie_bench.csv").exists()


def test_cli_help_names_the_libraries_default_metric_models(capsys):
    """The help's defaults are written out (the parser imports no torch); they must be the library's."""
    from coupled_sde.metrics.pie_bench import PIE_CLIP_MODEL
    from coupled_sde.metrics.structure import DEFAULT_STRUCTURE_MODEL

    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--help"])
    assert e.value.code == 0
    printed = capsys.readouterr().out
    assert PIE_CLIP_MODEL in printed and DEFAULT_STRUCTURE_MODEL in printed and "--evaluate-pie-bench" in printed
