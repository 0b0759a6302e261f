"""Pixel distances: values on known inputs, shapes, quantisation."""

from __future__ import annotations

import pytest
import torch
from metric_images import smooth_images

from coupled_sde.metrics import l1_255, l2


def test_identical_images_give_zero():
    images = smooth_images(3)
    assert torch.equal(l1_255(images, images), torch.zeros(3))
    assert torch.equal(l2(images, images), torch.zeros(3))


def test_known_values_per_image():
    black, white = -torch.ones(2, 3, 4, 5), torch.ones(2, 3, 4, 5)
    grey = torch.zeros(2, 3, 4, 5)
    grey[1] = 1.0  # second pair identical to white
    assert torch.allclose(l1_255(black, white), torch.tensor([255.0, 255.0]))
    assert torch.allclose(l1_255(grey, white), torch.tensor([127.5, 0.0]))
    assert torch.allclose(l2(grey, white), torch.tensor([0.25, 0.0]))
    assert torch.allclose(l2(black, white), torch.ones(2))


def test_symmetric_and_batch_equals_single():
    a, b = smooth_images(3, seed=0), smooth_images(3, seed=1).flip(0)
    for metric in (l1_255, l2):
        both = metric(a, b)
        assert both.shape == (3,) and both.dtype == torch.float32
        assert torch.allclose(both, metric(b, a))
        singles = torch.cat([metric(a[i : i + 1], b[i : i + 1]) for i in range(3)])
        assert torch.allclose(both, singles)


def test_quantize_rounds_to_8_bit_levels_and_clamps():
    a = torch.full((1, 3, 2, 2), 0.001)  # 127.6275 -> 128
    b = torch.full((1, 3, 2, 2), 1.5)  # out of range: clamped to 255
    assert torch.allclose(l1_255(a, b, quantize=True), torch.tensor([127.0]))
    assert torch.allclose(l1_255(a, b), torch.tensor([255.0 - 127.6275]), atol=1e-4)


def test_rejects_mismatched_or_non_image_inputs():
    with pytest.raises(ValueError, match="same shape"):
        l1_255(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        l2(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
