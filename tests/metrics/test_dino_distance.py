"""DINO distance: 1 - cos of the final-layernorm CLS token, DINO preprocessing, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_images import smooth_images, textured_uint8, uint8_to_tensor
from PIL import Image

from coupled_sde.metrics import DinoDistance


def test_identical_images_give_zero(dino):
    images = smooth_images(2, 64, 64)
    assert torch.allclose(dino(images, images), torch.zeros(2), atol=1e-6)


def test_distance_is_one_minus_cos_of_the_cls_token(dino):
    a, b = smooth_images(2, 64, 80, seed=0), smooth_images(2, 64, 80, seed=1).flip(0)
    with torch.no_grad():
        cls_a = dino.model(pixel_values=dino.preprocess(a)).last_hidden_state[:, 0]
        cls_b = dino.model(pixel_values=dino.preprocess(b)).last_hidden_state[:, 0]
    expected = 1 - (cls_a * cls_b).sum(-1) / (cls_a.norm(dim=-1) * cls_b.norm(dim=-1))
    got = dino(a, b)
    assert got.shape == (2,) and (got > 0).all()
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got, dino(b, a), atol=1e-6)
    singles = torch.cat([dino(a[i : i + 1], b[i : i + 1]) for i in range(2)])
    assert torch.allclose(got, singles, atol=1e-5)


def test_preprocessing_matches_the_pil_dino_transform(dino):
    """Resize(256, BICUBIC) -> CenterCrop(224) -> ImageNet normalisation, done with PIL as a reference."""
    image = textured_uint8(300, 451)  # odd margin on the long side: 384 - 224 = 160, 256 -> crop both
    pil = Image.fromarray(image).resize((384, 256), Image.BICUBIC)  # int(256 * 451 / 300) = 384
    array = np.asarray(pil, dtype=np.float32) / 255.0
    top, left = int(round((256 - 224) / 2)), int(round((384 - 224) / 2))
    crop = torch.from_numpy(array[top : top + 224, left : left + 224]).permute(2, 0, 1)[None]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    reference = (crop - mean) / std
    ours = dino.preprocess(uint8_to_tensor(image))
    assert ours.shape == (1, 3, 224, 224)
    diff = (ours - reference).abs()
    # PIL rounds to uint8 after each separable pass; in grey levels that is at most a few, ~0.3 on average.
    assert diff.max() < 0.08 and diff.mean() < 0.01


def test_pooler_is_ignored_and_from_pretrained_round_trip(dino, tmp_path):
    from transformers import ViTModel

    with_pooler = ViTModel(dino.model.config, add_pooling_layer=True)
    with_pooler.load_state_dict(dino.model.state_dict(), strict=False)
    a, b = smooth_images(2, 64, 64, seed=0), smooth_images(2, 64, 64, seed=1)
    assert torch.allclose(DinoDistance(with_pooler)(a, b), dino(a, b), atol=1e-6)

    dino.model.save_pretrained(tmp_path)
    loaded = DinoDistance.from_pretrained(str(tmp_path), dtype=torch.float64)
    assert loaded.model.pooler is None and loaded.dtype == torch.float64
    assert torch.allclose(loaded(a, b), dino(a, b), atol=1e-5)


def test_resize_crop_settings_are_checked(dino):
    with pytest.raises(ValueError, match="crop"):
        DinoDistance(dino.model, crop=196)
    with pytest.raises(ValueError, match="at least crop"):
        DinoDistance(dino.model, resize=200)
