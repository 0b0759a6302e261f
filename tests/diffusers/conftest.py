"""Fixtures for the diffusers backbones: tiny random pipelines, built once per test session.

The whole directory is skipped when diffusers (or transformers) is not installed. Importing
diffusers and building the pipelines costs seconds, so every pipeline fixture is session-scoped;
tests must not modify them (build a fresh one with ``tiny_flux_pipeline`` for anything
destructive, like a dtype change).
"""

from __future__ import annotations

import pytest
import torch

_REASON = 'the diffusers backends need the optional dependencies: pip install "coupled-sde[diffusers]"'
pytest.importorskip("diffusers", reason=_REASON)
pytest.importorskip("transformers", reason=_REASON)

from coupled_sde.backends.hf import (  # noqa: E402
    FluxBackbone,
    StableDiffusionBackbone,
    tiny_flux_pipeline,
    tiny_sd_pipeline,
)

#: T5 prompt length used by the tests (the pipeline default of 512 works but is slower).
MAX_SEQUENCE_LENGTH = 32


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models are 5-8x faster on one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def flux_pipe():
    """A tiny FLUX.1-dev-like pipeline (guidance embedding, dynamic shifting), float32."""
    return tiny_flux_pipeline(seed=0)


@pytest.fixture(scope="session")
def schnell_pipe():
    """A tiny FLUX.1-schnell-like pipeline (no guidance embedding, no shift), float32."""
    return tiny_flux_pipeline(seed=1, guidance_embeds=False)


@pytest.fixture(scope="session")
def flux(flux_pipe):
    return FluxBackbone(flux_pipe, max_sequence_length=MAX_SEQUENCE_LENGTH)


@pytest.fixture(scope="session")
def schnell(schnell_pipe):
    return FluxBackbone(schnell_pipe, max_sequence_length=MAX_SEQUENCE_LENGTH)


@pytest.fixture(scope="session")
def sd_pipe():
    """A tiny epsilon-prediction Stable Diffusion pipeline, float32."""
    return tiny_sd_pipeline(seed=0)


@pytest.fixture(scope="session")
def sd_v_pipe():
    """A tiny v-prediction Stable Diffusion pipeline (SD 2.x 768-v style), float32."""
    return tiny_sd_pipeline(seed=0, prediction_type="v_prediction")


@pytest.fixture(scope="session")
def sd(sd_pipe):
    return StableDiffusionBackbone(sd_pipe)


@pytest.fixture()
def images():
    """Two smooth 64x64 test images in [-1, 1]."""
    grid = torch.linspace(-1.0, 1.0, 64)
    first = torch.stack([grid[None, :].expand(64, 64), grid[:, None].expand(64, 64), torch.zeros(64, 64)])
    second = torch.stack([torch.sin(3 * first[0]), torch.cos(2 * first[1]), first[0] * first[1]])
    return torch.stack([first, second])
