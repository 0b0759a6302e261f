"""benchmarks/matched_budget.py: every registered method (and ODE inversion with each ODE integrator)
is fitted to the budget by its measured cost and run on the shipped digits model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from coupled_sde.editing import methods

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "matched_budget.py"


def _script():
    spec = importlib.util.spec_from_file_location("matched_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_method_fits_the_budget(tmp_path):
    script = _script()
    rows = script.run(n=3, budgets=(18,))
    labels = [r["method"] for r in rows]
    for method in methods():
        assert any(label == method or label.startswith(method + "[") for label in labels), method
    for r in rows:
        assert 0 < r["model_evaluations"] <= 18 and 0.0 <= r["fidelity"] <= 1.0
    by = {r["method"]: r for r in rows}
    assert by["ode-inversion[fireflow]"]["settings"] == '{"n_steps": 9, "start": 1}'  # FireFlow's 8 + 8 steps (+ 2)
    assert by["sync-sde"]["model_evaluations"] == 18 and by["rf-inversion"]["model_calls"] == 18
    assert script.save(rows, tmp_path / "mb.csv").read_text().count("\n") == len(rows) + 1
