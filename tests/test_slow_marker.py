"""The README's promise: slow tests are excluded by default and ``python -m pytest -m slow`` runs them.

The project's ``[tool.pytest.ini_options]`` (its ``addopts = "-m 'not slow'"`` and the ``slow``
marker) is copied into a scratch project with one slow and one fast test, and pytest is run there
both ways; and the project itself must carry slow tests for ``-m slow`` to run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ini_options() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r"^\[tool\.pytest\.ini_options\]\n(.*?)(?=^\[)", text, flags=re.M | re.S)
    assert m, "pyproject.toml has no [tool.pytest.ini_options]"
    kept = [line for line in m.group(1).splitlines() if not line.startswith("testpaths")]
    return "[tool.pytest.ini_options]\n" + "\n".join(kept) + "\n"


def _run(folder: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=folder, capture_output=True, text=True, timeout=120
    )
    return done.stdout + done.stderr


def test_slow_tests_are_deselected_by_default_and_selected_with_m_slow(tmp_path):
    (tmp_path / "pyproject.toml").write_text(_ini_options())
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n\ndef test_fast():\n    pass\n"
    )
    default = _run(tmp_path, "-rA")
    assert "1 passed, 1 deselected" in default and "PASSED test_x.py::test_fast" in default, default
    slow = _run(tmp_path, "-rA", "-m", "slow")
    assert "1 passed, 1 deselected" in slow and "PASSED test_x.py::test_slow" in slow, slow
    assert "PytestUnknownMarkWarning" not in default + slow


def test_the_project_has_slow_tests():
    marked = [p for p in (ROOT / "tests").rglob("test_*.py") if "@pytest.mark.slow" in p.read_text(encoding="utf-8")]
    if not marked:
        pytest.fail("no test carries @pytest.mark.slow: `python -m pytest -m slow` would collect nothing (exit 5)")
