"""PIE-Bench's metrics: RLE masks, SSIM/PSNR against scikit-image, the DINO structure distance against
a transcription of PnPInversion's key extraction, and the masked metrics' conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coupled_sde.metrics import LPIPS, PieBenchMetrics, StructureDistance, l2, psnr, ssim
from coupled_sde.metrics.structure import _key_projection
from coupled_sde.runs.pie_bench import decode_rle_mask


def _images(seed: int, size: int = 64, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(batch, 3, size + 4, size + 4, generator=g), 5, 1)
    return smooth * 2 - 1


# --- the benchmark's own mask_decode (evaluation/evaluate.py), transcribed --------------------------
def _pie_mask_decode(encoded_mask, image_shape=(512, 512)):
    length = image_shape[0] * image_shape[1]
    mask_array = np.zeros((length,))
    for i in range(0, len(encoded_mask), 2):
        splice_len = min(encoded_mask[i + 1], length - encoded_mask[i])
        for j in range(splice_len):
            mask_array[encoded_mask[i] + j] = 1
    mask_array = mask_array.reshape(image_shape[0], image_shape[1])
    mask_array[0, :] = 1
    mask_array[-1, :] = 1
    mask_array[:, 0] = 1
    mask_array[:, -1] = 1
    return mask_array


def test_rle_masks_decode_exactly_as_the_benchmark():
    rng = np.random.default_rng(0)
    for shape in [(512, 512), (40, 24)]:
        n = shape[0] * shape[1]
        starts = np.sort(rng.choice(n, 12, replace=False))
        runs = rng.integers(1, n // 6, 12)
        rle = [int(v) for pair in zip(starts, runs) for v in pair] + [n - 3, 50]  # a run past the end is clipped
        assert np.array_equal(decode_rle_mask(rle, shape), _pie_mask_decode(rle, shape))
    with pytest.raises(ValueError, match="pairs"):
        decode_rle_mask([1, 2, 3])


def test_ssim_and_psnr_match_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    a, b = _images(0), _images(1)
    b = 0.6 * a + 0.4 * b
    ours_ssim, ours_psnr = ssim(a, b), psnr(a, b)
    for k in range(a.shape[0]):
        x, y = ((a[k] + 1) / 2).double().numpy(), ((b[k] + 1) / 2).double().numpy()
        ref = metrics.structural_similarity(
            x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0
        )
        assert abs(float(ours_ssim[k]) - ref) < 1e-6, (float(ours_ssim[k]), ref)
        assert abs(float(ours_psnr[k]) - metrics.peak_signal_noise_ratio(x, y, data_range=1.0)) < 1e-4
    assert torch.allclose(ssim(a, a), torch.ones(2)) and torch.isinf(psnr(a, a)).all()


def _reference_structure_distance(metric: StructureDistance, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PnPInversion's VitExtractor: the fused qkv output of the last block, ``get_keys_from_qkv``,
    ``attn_cosine_sim``, then ``F.mse_loss``; the fused qkv is rebuilt from transformers' q/k/v."""
    model = metric.model
    attention = _key_projection(model, -1)
    blocks = getattr(model, "layers", None) or model.encoder.layer
    att = blocks[-1].attention
    q_proj = getattr(att, "q_proj", None) or att.attention.query
    v_proj = getattr(att, "v_proj", None) or att.attention.value
    heads, dim = model.config.num_attention_heads, model.config.hidden_size

    def self_sim(img):
        captured = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: captured.__setitem__(n, o[0])) for n, m in (("q", q_proj), ("k", attention), ("v", v_proj))]
        with torch.no_grad():
            model(pixel_values=metric.preprocess(img), interpolate_pos_encoding=True)
        for h in hooks:
            h.remove()
        qkv = torch.cat([captured["q"], captured["k"], captured["v"]], dim=-1)  # DINO's Linear(dim, 3 dim)
        patch_num = qkv.shape[0]
        k = qkv.reshape(patch_num, 3, heads, dim // heads).permute(1, 2, 0, 3)[1]
        h, t, d = k.shape
        x = k.transpose(0, 1).reshape(t, h * d)[None, None, ...][0]
        norm1 = x.norm(dim=2, keepdim=True)
        factor = torch.clamp(norm1 @ norm1.permute(0, 2, 1), min=1e-08)
        return (x @ x.permute(0, 2, 1)) / factor

    return torch.stack([torch.nn.functional.mse_loss(self_sim(a[i : i + 1]), self_sim(b[i : i + 1])) for i in range(a.shape[0])])


def test_structure_distance_matches_the_benchmark_extractor():
    metric = StructureDistance.tiny(0)
    a, b = _images(2, 96), _images(3, 96)
    ours = metric(a, b)
    ref = _reference_structure_distance(metric, a, b)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-9), (ours, ref)
    assert torch.equal(metric(a, a), torch.zeros(2))
    assert metric.preprocess(a).shape[-2:] == (224, 224) and metric.resized_size(512, 1536) == (160, 480)
    # the script feeds 0..255 pixel values to the ImageNet normalisation; [0, 1] inputs give other numbers
    unit = StructureDistance(metric.model, pixel_scale=1.0)
    assert not torch.allclose(unit(a, b), ours)


def test_masked_metrics_ignore_the_edited_region():
    metrics = PieBenchMetrics(structure=None, lpips=LPIPS.random(0, resize=None), clip=None)
    src = _images(4)
    mask = torch.zeros(2, 64, 64)
    mask[:, 16:40, 20:50] = 1
    inside_only = torch.where(mask[:, None].bool(), _images(5), src)
    scores = metrics(src, inside_only, mask, ["a [cat]"] * 2, ["a [dog]"] * 2)
    assert torch.isinf(scores["psnr_unedit_part"]).all() and torch.equal(scores["mse_unedit_part"], torch.zeros(2))
    assert torch.allclose(scores["ssim_unedit_part"], torch.ones(2)) and torch.allclose(scores["lpips_unedit_part"], torch.zeros(2), atol=1e-6)
    outside = src.clone()
    outside[:, :, :8] = -1.0
    scores = metrics(src, outside, mask, ["a"] * 2, ["b"] * 2)
    # the script's MSE: both images times (1 - mask) on the [0, 1] scale, averaged over the whole image
    keep = (1 - mask)[:, None]
    expected = (((src + 1) / 2 * keep - (outside + 1) / 2 * keep) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(scores["mse_unedit_part"], expected, atol=1e-7) and (expected > 0).all()
    assert torch.allclose(scores["psnr_unedit_part"], 10 * torch.log10(1 / expected), atol=1e-3)
    assert torch.allclose(l2(src, outside), l2(src, outside))
    # nothing outside the mask: the unedited-part metrics are NaN, as the script writes "nan"
    full = metrics(src, outside, torch.ones(2, 64, 64), ["a"] * 2, ["b"] * 2)
    assert all(math.isnan(float(v)) for v in full["psnr_unedit_part"])
    with pytest.raises(ValueError, match="binary"):
        metrics(src, outside, torch.full((2, 64, 64), 0.5), ["a"] * 2, ["b"] * 2)


def test_clip_scores_whole_and_edited_region(clip):
    metrics = PieBenchMetrics(structure=None, lpips=None, clip=clip)
    src, edit = _images(6), _images(7)
    mask = torch.zeros(2, 64, 64)
    mask[0, 10:30, 10:30] = 1  # the second image has an empty mask
    scores = metrics(src, edit, mask, ["a [cat] on a mat"] * 2, ["a [dog] on a mat"] * 2)
    whole = clip(edit, ["a dog on a mat"] * 2).clamp(min=0)
    assert torch.allclose(scores["clip_similarity_target_image"], whole)
    region = clip((edit + 1) * mask[:, None] - 1, ["a dog on a mat"] * 2).clamp(min=0)
    assert torch.allclose(scores["clip_similarity_target_image_edit_part"][0], region[0])
    assert math.isnan(float(scores["clip_similarity_target_image_edit_part"][1]))
    assert torch.allclose(scores["clip_similarity_source_image"], clip(src, ["a cat on a mat"] * 2).clamp(min=0))


def test_squeezenet_lpips_layout_and_loading(tmp_path):
    from coupled_sde.metrics.lpips_squeeze import SQUEEZE_CHANNELS, LPIPSSqueeze

    metric = LPIPSSqueeze.random(0)
    a, b = _images(8), _images(9)
    x = (a - metric.shift) / metric.scale
    assert [t.shape[1] for t in metric.taps(x)] == list(SQUEEZE_CHANNELS)
    assert [t.shape[-1] for t in metric.taps(x)] == [31, 15, 7, 3, 3, 3, 3]  # 64 px: conv/2, then three 3x3/2 ceil pools
    d = metric(a, b)
    assert d.shape == (2,) and (d > 0).all() and torch.equal(metric(a, a), torch.zeros(2))
    assert torch.allclose(metric(b, a), d)
    # torchvision's squeezenet1_1 keys ("features.3.squeeze.weight", ...) and lpips' head keys load as they are
    trunk = {f"features.{k}": v for k, v in metric.features.state_dict().items()}
    trunk["classifier.1.weight"] = torch.zeros(1000, 512, 1, 1)
    assert "features.3.squeeze.weight" in trunk and "features.12.expand3x3.weight" in trunk
    heads = {f"lin{n}.model.1.weight": h.model[1].weight for n, h in enumerate(metric.lins)}
    torch.save(trunk, tmp_path / "squeezenet1_1.pth")
    torch.save(heads, tmp_path / "squeeze.pth")
    loaded = LPIPSSqueeze.from_pretrained(tmp_path / "squeezenet1_1.pth", tmp_path / "squeeze.pth")
    assert torch.equal(loaded(a, b), d)
    del heads["lin6.model.1.weight"]
    torch.save(heads, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match="lin6"):
        LPIPSSqueeze.from_pretrained(tmp_path / "squeezenet1_1.pth", tmp_path / "bad.pth")
