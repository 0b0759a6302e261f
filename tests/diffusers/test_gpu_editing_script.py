"""benchmarks/gpu_editing.py at toy size on the CPU (no GPU is needed for the project's tests): every
method runs through the timing harness, fused and two-call sync-SDE, with and without the offload hook."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_editing.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_editing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_gpu_script_runs_tiny_on_the_cpu(script, tmp_path):
    out = tmp_path / "gpu.csv"
    rows = script.main(["--tiny", "--offload", "--out", str(out)])
    assert len(rows) == (5 + 4) * 2  # FLUX has FireFlow with feature sharing too
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    by = {(r["model"], r["method"], r["offload"]): r for r in rows}
    for model in ("flux", "sd3.5"):
        fused, two = by[(model, "sync-sde fused", False)], by[(model, "sync-sde two calls", False)]
        assert fused["model_calls"] == two["model_calls"] == 3  # 4 steps from i0 = 1
        assert fused["transformer_calls"] == 3 and two["transformer_calls"] == 6
        assert by[(model, "flowedit", True)]["transformer_calls"] == 3
        assert by[(model, "rf-inversion", False)]["transformer_calls"] == 8  # 4 + 4
    assert by[("flux", "fireflow shared", False)]["transformer_calls"] == 10  # 2 (4 + 1)
    assert all(r["seconds_per_edit"] > 0 for r in rows)


def test_full_size_needs_a_gpu(script, monkeypatch):
    monkeypatch.setattr(script.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        script.main(["--models", "flux"])
