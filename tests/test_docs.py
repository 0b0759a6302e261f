"""The documentation's examples run: every ```python block of every ``docs/**/*.md`` page.

One test case per page. A page's blocks run in order in one namespace (later blocks use what earlier
ones defined), in a fresh temporary working directory, so examples that write files leave nothing
behind. Blocks fenced as ```python no-run are shown but not run (only for code that needs a GPU or a
model download, e.g. ``FluxBackbone.from_pretrained``). Tracebacks point at the page and its line.
Pages that use the diffusers backends are skipped when the ``diffusers`` extra is not installed.

The examples assert what they claim (exact reconstruction, orders within tolerances, ...), so a
change that breaks the documented API or its documented behaviour fails here.

``test_api_page_names_every_public_name`` keeps ``docs/api.md`` in step with the package: every name in
the ``__all__`` of the documented modules must appear on that page.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(first line number, info string, code)`` of every fenced block of a Markdown text."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        blocks.append((i + 2, info, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def runnable(info: str) -> bool:
    words = info.split()
    return bool(words) and words[0] == "python" and "no-run" not in words[1:]


def test_the_block_parser():
    text = "a\n```python\nx = 1\n```\n\n```python no-run\ny = 2\n```\n````bash\nz\n```\n````\n"
    blocks = code_blocks(text)
    assert [(line, info) for line, info, _ in blocks] == [(3, "python"), (7, "python no-run"), (10, "bash")]
    assert blocks[0][2] == "x = 1\n" and blocks[2][2] == "z\n```\n"
    assert [runnable(info) for _, info, _ in blocks] == [True, False, False]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path, monkeypatch):
    blocks = [(line, code) for line, info, code in code_blocks(page.read_text(encoding="utf-8")) if runnable(info)]
    if not blocks:
        pytest.skip("no runnable python blocks")
    if any("coupled_sde.backends.hf" in code for _, code in blocks):
        for package in ("diffusers", "transformers"):
            if importlib.util.find_spec(package) is None:
                pytest.skip(f'this page needs the optional dependency {package!r}: pip install "coupled-sde[diffusers]"')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    try:
        for line, code in blocks:
            # pad so that tracebacks show the line numbers of the Markdown file
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")


#: Modules whose public names (``__all__``) docs/api.md must all mention.
API_MODULES = [
    "coupled_sde",
    "coupled_sde.grid",
    "coupled_sde.sde",
    "coupled_sde.brownian",
    "coupled_sde.brownian_tree",
    "coupled_sde.counter_rng",
    "coupled_sde.coupling",
    "coupled_sde.drivers",
    "coupled_sde.integrators",
    "coupled_sde.solve",
    "coupled_sde.reversal",
    "coupled_sde.noising",
    "coupled_sde.errors",
    "coupled_sde.problems",
    "coupled_sde.studies",
    "coupled_sde.backends.analytic",
    "coupled_sde.schedules",
    "coupled_sde.backends.registry",
    "coupled_sde.backends.digits",
    "coupled_sde.editing",
    "coupled_sde.metrics",
]


def test_api_page_names_every_public_name():
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = []
    for name in API_MODULES:
        module = importlib.import_module(name)
        missing += [f"{name}.{n}" for n in getattr(module, "__all__", []) if not re.search(rf"\b{re.escape(n)}\b", api)]
    assert not missing, f"docs/api.md does not mention: {', '.join(missing)}"
