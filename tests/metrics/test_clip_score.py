"""CLIP score: 100 * cos of the model's own features, preprocessing vs the image processor, truncation."""

from __future__ import annotations

import pytest
import torch
from metric_images import smooth_images, textured_uint8, uint8_to_tensor

from coupled_sde.metrics import ClipScore
from coupled_sde.metrics._tiny import clip_image_processor_class


def _features(output):
    """transformers 5 returns an output with ``pooler_output``; 4 returns the tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def test_score_is_100_cos_of_the_model_features(clip):
    images = smooth_images(2, 64, 80)
    prompts = ["a photo of a cat", "a red car"]
    pixel_values = clip.preprocess(images)
    assert pixel_values.shape == (2, 3, 336, 336)
    tokens = clip.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        image_embeds = _features(clip.model.get_image_features(pixel_values=pixel_values))
        text_embeds = _features(
            clip.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        )
    image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    expected = 100 * (image_embeds * text_embeds).sum(-1)
    got = clip(images, prompts)
    assert got.shape == (2,) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-4)


def test_batch_equals_single(clip):
    images = smooth_images(3, 48, 48)
    prompts = ["a cat", "a much longer prompt about a dog on the beach", "x"]  # different lengths: padding
    batch = clip(images, prompts)
    singles = torch.cat([clip(images[i : i + 1], prompts[i : i + 1]) for i in range(3)])
    assert torch.allclose(batch, singles, atol=1e-4)


def test_long_prompts_are_truncated_to_77_tokens(clip):
    long = "a cat sitting on a table " * 40  # the tiny tokenizer gives about one token per character
    tokens = clip.tokenize([long, "a cat"])
    assert tokens["input_ids"].shape[1] == 77
    assert tokens["input_ids"][0, -1] == clip.tokenizer.eos_token_id  # the end token survives truncation
    images = smooth_images(2, 32, 32)
    scores = clip(images, [long, long + " and more words after the cut"])
    assert torch.isfinite(scores).all()
    assert scores[0] == pytest.approx(float(clip(images[:1], [long + " wearing a hat"])[0]), abs=1e-4)


def test_preprocessing_matches_the_clip_image_processor(clip):
    """Torch bicubic (anti-aliased) vs the processor's PIL bicubic on uint8: equal up to 8-bit rounding."""
    processor = clip_image_processor_class()(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    for height, width in [(400, 521), (100, 150)]:  # downscaling and upscaling; odd crop margin on the first
        image = textured_uint8(height, width)
        reference = torch.as_tensor(processor(images=image, return_tensors="pt")["pixel_values"])
        ours = clip.preprocess(uint8_to_tensor(image))
        assert ours.shape == reference.shape == (1, 3, 336, 336)
        diff = (ours - reference).abs()
        # one grey level is 1 / (255 * 0.27) ~ 0.015 here; PIL rounds to uint8 after each separable pass
        assert diff.max() < 0.06 and diff.mean() < 0.008
        score_ref = clip.model.get_image_features(pixel_values=reference)
        assert torch.allclose(_features(score_ref), clip.image_features(uint8_to_tensor(image)), atol=0.05)


def test_from_pretrained_round_trip(clip, tmp_path):
    clip.model.save_pretrained(tmp_path)
    clip.tokenizer.save_pretrained(tmp_path)
    processor = clip_image_processor_class()(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor.save_pretrained(tmp_path)
    loaded = ClipScore.from_pretrained(str(tmp_path), device="cpu", dtype=torch.float64)
    assert loaded.dtype == torch.float64 and loaded.resize_size == 336 and loaded.max_length == 77
    images, prompts = smooth_images(2, 40, 40), ["a cat", "a dog"]
    assert torch.allclose(loaded(images, prompts), clip(images, prompts), atol=1e-3)


def test_one_prompt_per_image(clip):
    with pytest.raises(ValueError, match="one prompt per image"):
        clip(smooth_images(2, 32, 32), ["a cat"])
    with pytest.raises(ValueError, match="bare string"):
        clip(smooth_images(2, 32, 32), "ab")
