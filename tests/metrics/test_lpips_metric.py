"""LPIPS (VGG16, v0.1): zero, symmetry, positivity, the per-layer formula by hand, weight loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from metric_images import smooth_images

from coupled_sde.metrics import LPIPS
from coupled_sde.metrics.lpips import VGG16_CHANNELS, normalize_channels

#: torchvision vgg16().features indices holding a Conv2d.
_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def test_identical_images_give_exactly_zero(lpips):
    images = smooth_images(2, 48, 48)
    assert torch.equal(lpips(images, images), torch.zeros(2))


def test_symmetric_positive_and_batched(lpips):
    a, b = smooth_images(3, 48, 48, seed=0), smooth_images(3, 48, 48, seed=1).flip(0)
    ab, ba = lpips(a, b), lpips(b, a)
    assert ab.shape == (3,) and ab.dtype == torch.float32
    assert torch.allclose(ab, ba, rtol=1e-5, atol=1e-7)
    assert (ab > 0).all()
    singles = torch.cat([lpips(a[i : i + 1], b[i : i + 1]) for i in range(3)])
    assert torch.allclose(ab, singles, rtol=1e-4, atol=1e-7)
    assert torch.allclose(lpips.layer_distances(a, b).sum(1), ab)


def test_normalize_channels_gives_unit_vectors():
    x = torch.randn(2, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    norms = normalize_channels(x).pow(2).sum(1).sqrt()
    assert torch.allclose(norms, torch.ones(2, 3, 3), atol=1e-6)


def test_first_layer_distance_by_hand(lpips):
    """Layer 0 (relu1_2), recomputed from the raw weights with explicit per-pixel loops."""
    a, b = smooth_images(2, 16, 16, seed=2)[:1], smooth_images(2, 16, 16, seed=3)[1:]  # 16: the smallest size VGG16 takes
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    conv1, conv2 = lpips.features[0], lpips.features[2]

    def relu1_2(x):
        x = (x - shift) / scale
        x = F.relu(F.conv2d(x, conv1.weight, conv1.bias, padding=1))
        return F.relu(F.conv2d(x, conv2.weight, conv2.bias, padding=1))[0].double()

    fa, fb = relu1_2(a), relu1_2(b)  # (64, 16, 16)
    weights = lpips.lins[0].model[1].weight.view(-1).double()
    total = 0.0
    for i in range(16):
        for j in range(16):
            na = fa[:, i, j] / (fa[:, i, j].norm() + 1e-10)
            nb = fb[:, i, j] / (fb[:, i, j].norm() + 1e-10)
            total += float((weights * (na - nb) ** 2).sum())
    expected = total / 256
    got = float(lpips.layer_distances(a, b)[0, 0])
    assert got == pytest.approx(expected, rel=1e-4)


def test_too_small_images_are_rejected(lpips):
    with pytest.raises(ValueError, match="16x16"):
        lpips(torch.zeros(1, 3, 8, 32), torch.zeros(1, 3, 8, 32))


def test_resize_parameter(lpips):
    a, b = smooth_images(1, 64, 64, seed=0), smooth_images(2, 64, 64, seed=1)[1:]
    resized = LPIPS(resize=32)
    resized.load_state_dict(lpips.state_dict())
    small_a = F.interpolate(a, size=(32, 32), mode="bicubic", antialias=True).clamp(-1, 1)
    small_b = F.interpolate(b, size=(32, 32), mode="bicubic", antialias=True).clamp(-1, 1)
    assert torch.allclose(resized(a, b), lpips(small_a, small_b), rtol=1e-5)
    assert LPIPS().resize == 1024  # the paper's protocol


def test_state_dict_keys_follow_torchvision_and_lpips(lpips):
    trunk = lpips.features.state_dict()
    assert set(trunk) == {f"{i}.{p}" for i in _CONV_INDICES for p in ("weight", "bias")}
    assert trunk["28.weight"].shape == (512, 512, 3, 3) and trunk["0.weight"].shape == (64, 3, 3, 3)
    heads = lpips.lins.state_dict()
    assert set(heads) == {f"{n}.model.1.weight" for n in range(5)}
    assert [heads[f"{n}.model.1.weight"].shape[1] for n in range(5)] == list(VGG16_CHANNELS)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loading_torchvision_and_lpips_format_files(lpips, tmp_path, suffix):
    source = LPIPS.random(seed=7, resize=None)
    vgg = {f"features.{k}": v.clone() for k, v in source.features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # a full torchvision vgg16 state dict also has the classifier
    lin = {f"lin{n}.model.1.weight": source.lins[n].model[1].weight.clone() for n in range(5)}
    vgg_path, lin_path = tmp_path / f"vgg16{suffix}", tmp_path / f"vgg{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(vgg, str(vgg_path))
        save_file(lin, str(lin_path))
    else:
        torch.save(vgg, vgg_path)
        torch.save(lin, lin_path)
    loaded = LPIPS.from_pretrained(vgg_path, lin_path, resize=None)
    a, b = smooth_images(2, 32, 32, seed=0), smooth_images(2, 32, 32, seed=1)
    assert torch.equal(loaded(a, b), source(a, b))
    assert not torch.equal(loaded(a, b), lpips(a, b))  # really different weights were loaded


def test_loading_accepts_lins_keys_and_rejects_missing_ones(lpips):
    metric = LPIPS(resize=None)
    metric.load_lin_state_dict({f"lins.{n}.model.1.weight": lpips.lins[n].model[1].weight for n in range(5)})
    assert torch.equal(metric.lins[4].model[1].weight, lpips.lins[4].model[1].weight)
    with pytest.raises(KeyError, match="lin3"):
        metric.load_lin_state_dict({f"lin{n}.model.1.weight": torch.zeros(1, VGG16_CHANNELS[n], 1, 1) for n in range(3)})
    with pytest.raises(KeyError, match="torchvision"):
        metric.load_vgg_state_dict({"features.0.weight": torch.zeros(64, 3, 3, 3)})
