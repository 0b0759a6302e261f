"""Fixtures for the metrics tests: tiny random-weight networks, built once per session.

The directory is skipped without transformers (CLIP and DINO need it; the extra is
``coupled-sde[metrics]``). Fixtures are session-scoped; tests must not modify them.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason='the metrics tests need the optional dependencies: pip install "coupled-sde[metrics]"')

from coupled_sde.metrics import LPIPS, ClipScore, DinoDistance  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models are several times faster on one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def clip() -> ClipScore:
    return ClipScore.tiny(seed=0)


@pytest.fixture(scope="session")
def dino() -> DinoDistance:
    return DinoDistance.tiny(seed=0)


@pytest.fixture(scope="session")
def lpips() -> LPIPS:
    """Random-weight VGG16 LPIPS at the input size (1024x1024 is slow on a CPU)."""
    return LPIPS.random(seed=0, resize=None)
