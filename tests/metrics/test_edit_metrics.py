"""EditMetrics: all four metrics per edit, optional components."""

from __future__ import annotations

import pytest
import torch
from metric_images import smooth_images

from coupled_sde.metrics import EditMetrics, l1_255


@pytest.fixture(scope="module")
def metrics(clip, lpips, dino):
    return EditMetrics(clip=clip, lpips=lpips, dino=dino)


def test_all_four_per_image(metrics, clip, lpips, dino):
    source, edited = smooth_images(2, 48, 48, seed=0), smooth_images(2, 48, 48, seed=1)
    prompts = ["a cat", "a dog"]
    scores = metrics(source, edited, prompts)
    assert set(scores) == {"clip", "lpips", "dino", "l1"}
    assert all(value.shape == (2,) for value in scores.values())
    assert torch.allclose(scores["clip"], clip(edited, prompts))
    assert torch.allclose(scores["lpips"], lpips(source, edited))
    assert torch.allclose(scores["dino"], dino(source, edited))
    assert torch.allclose(scores["l1"], l1_255(source, edited))
    singles = [metrics(source[i : i + 1], edited[i : i + 1], prompts[i : i + 1]) for i in range(2)]
    for key in scores:
        assert torch.allclose(scores[key], torch.cat([s[key] for s in singles]), rtol=1e-4, atol=1e-5), key


def test_unchanged_edit_has_zero_distances(metrics):
    source = smooth_images(2, 48, 48)
    scores = metrics(source, source.clone(), ["a cat", "a dog"])
    assert torch.equal(scores["lpips"], torch.zeros(2))
    assert torch.equal(scores["l1"], torch.zeros(2))
    assert torch.allclose(scores["dino"], torch.zeros(2), atol=1e-6)


def test_components_can_be_skipped(lpips):
    source, edited = smooth_images(1, 32, 32, seed=0), smooth_images(1, 32, 32, seed=1)
    assert set(EditMetrics(lpips=lpips)(source, edited)) == {"lpips", "l1"}
    assert EditMetrics(l1=None)(source, edited) == {}
    with pytest.raises(ValueError, match="target prompts"):
        EditMetrics.tiny(seed=1)(source, edited)


def test_tiny_builds_everything():
    metrics = EditMetrics.tiny(seed=3)
    assert metrics.clip is not None and metrics.lpips is not None and metrics.dino is not None
    assert metrics.lpips.resize is None
