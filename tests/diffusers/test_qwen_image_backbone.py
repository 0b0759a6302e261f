"""QwenImageBackbone on a tiny random Qwen-Image pipeline: masked prompt batching, rescaled CFG, parity, VAE, dtypes."""

from __future__ import annotations

import pytest
import torch
from backbone_checks import (
    CallCounter,
    assert_bf16_model_float32_state,
    assert_from_pretrained_matches,
    assert_runs_with_cpu_offload,
    assert_same_prompt_round_trip,
    generate,
    gradient_images,
    pipeline_latents,
    quiet_copy,
    relative_error,
)

from coupled_sde.backends.base import Condition, ImageBackbone
from coupled_sde.backends.hf.flux import pack_latents, unpack_latents
from coupled_sde.backends.hf.qwen_image import QwenImageBackbone
from coupled_sde.backends.hf.tiny_backbones import tiny_qwen_image_pipeline

LATENT = (4, 4, 6)  # a 32x48 image (the tiny VAE has 4 latent channels)
TEXT_LENGTH = 64


@pytest.fixture(scope="session")
def qwen_pipe():
    return tiny_qwen_image_pipeline(seed=0)


@pytest.fixture(scope="session")
def qwen(qwen_pipe):
    return QwenImageBackbone(qwen_pipe, max_sequence_length=TEXT_LENGTH)


@pytest.fixture()
def small_images():
    return gradient_images(32, 48, lambda first: torch.sin(2 * first))


def _state(members: int, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(members, batch, *LATENT, generator=torch.Generator().manual_seed(seed))


def _pipeline_prediction(pipe, x, sigma, prompt, scale=1.0, negative=None):
    """One member's prediction as ``QwenImagePipeline.__call__`` computes it: each prompt encoded alone
    (no padding), CFG with the per-token norm rescale."""
    b, c, h, w = x.shape
    tokens = pack_latents(x)

    def call(text):
        embeds, mask = pipe.encode_prompt(text, max_sequence_length=TEXT_LENGTH)
        return pipe.transformer(
            hidden_states=tokens,
            timestep=torch.full((b,), sigma),
            encoder_hidden_states=embeds.expand(b, -1, -1),
            encoder_hidden_states_mask=None if mask is None else mask.expand(b, -1),
            img_shapes=[[(1, h // 2, w // 2)]] * b,
            return_dict=False,
        )[0]

    out = call(prompt)
    if scale > 1:
        neg = call(negative)
        mixed = neg + scale * (out - neg)
        out = mixed * (out.norm(dim=-1, keepdim=True) / mixed.norm(dim=-1, keepdim=True))
    return unpack_latents(out, h, w)


def test_is_a_flow_image_backbone(qwen):
    assert isinstance(qwen, ImageBackbone) and qwen.prediction == "flow"
    assert (qwen.image_multiple, qwen.latent_channels) == (16, 4)
    assert qwen.latent_shape(32, 48) == LATENT


def test_tiny_tokenizer_drops_exactly_the_template_prefix(qwen_pipe):
    """The pipeline drops the first ``prompt_template_encode_start_idx`` (34) tokens: the template's system
    prefix with the real tokenizer, and with the tiny one."""
    prefix = qwen_pipe.prompt_template_encode.split("{}")[0]
    assert len(qwen_pipe.tokenizer(prefix).input_ids) == qwen_pipe.prompt_template_encode_start_idx == 34


def test_members_and_rescaled_cfg_rows_in_one_call(qwen, qwen_pipe):
    conditions = [
        Condition("a cat", guidance=4.0),  # no negative: " "
        Condition("a photo of a dog on the beach at night", guidance=2.5, negative_prompt="a blurry sketch"),
        Condition("a dog", guidance=1.0),
    ]
    x, sigma = _state(3, 2), 0.55
    encoded = qwen.encode_conditions(conditions)
    assert encoded.prompt_mask is not None  # prompts of different lengths: padded and masked
    with CallCounter(qwen_pipe.transformer) as calls:
        u = qwen.predict(x, sigma, encoded)
    assert calls.batches == [3 * 2 + 2 * 2]
    expected = [
        _pipeline_prediction(qwen_pipe, x[0], sigma, "a cat", 4.0, " "),
        _pipeline_prediction(qwen_pipe, x[1], sigma, conditions[1].prompt, 2.5, "a blurry sketch"),
        _pipeline_prediction(qwen_pipe, x[2], sigma, "a dog"),
    ]
    for k in range(3):
        torch.testing.assert_close(u[k], expected[k], rtol=1e-4, atol=1e-5)


def test_knobs_that_do_not_apply(qwen):
    with pytest.raises(ValueError, match="true_cfg"):
        qwen.encode_conditions([Condition("a cat", true_cfg=2.0, negative_prompt="a dog")])
    with pytest.warns(UserWarning, match="negative_prompt is ignored"):
        qwen.encode_conditions([Condition("a cat", guidance=1.0, negative_prompt="a dog")])
    with pytest.raises(ValueError, match="nearest valid size is 32x48"):
        qwen.encode_images(torch.zeros(1, 3, 30, 44))


@pytest.mark.parametrize("n_steps", [2, 4, 30])
def test_sigmas_are_the_pipelines(qwen, n_steps):
    sigmas = qwen.schedule.grid(n_steps, LATENT).times
    assert sigmas.dtype == torch.float64 and sigmas[-1] == 0
    pipe = quiet_copy(qwen.pipe)
    pipe(prompt="a cat", height=32, width=48, num_inference_steps=n_steps, output_type="latent", max_sequence_length=TEXT_LENGTH)
    torch.testing.assert_close(sigmas.float(), pipe.scheduler.sigmas, rtol=1e-6, atol=1e-7)


def test_single_step_schedule_is_refused(qwen):
    """diffusers' terminal stretch gives NaN for one step; the backbone says so instead of sampling NaNs."""
    with pytest.raises(ValueError, match="n_steps >= 2"):
        qwen.schedule.grid(1, LATENT)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_generation_matches_the_pipelines_own_loop(qwen, guidance):
    n_steps = 4
    x_T = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(7))
    ours, _ = generate(
        qwen, x_T, Condition("a photo of a cat", guidance=guidance, negative_prompt=" " if guidance > 1 else None), n_steps
    )
    tokens = pipeline_latents(
        qwen.pipe,
        pack_latents(x_T),
        "a photo of a cat",
        n_steps,
        32,
        48,
        negative_prompt=" " if guidance > 1 else None,
        true_cfg_scale=guidance,
        max_sequence_length=TEXT_LENGTH,
    )
    reference = unpack_latents(tokens, *LATENT[1:])
    assert relative_error(ours, reference) < 1e-5, relative_error(ours, reference)


def test_vae_normalisation(qwen, small_images):
    latents = qwen.encode_images(small_images, torch.Generator().manual_seed(1))
    assert latents.shape == (2, *LATENT) and latents.dtype == torch.float32
    vae = qwen.pipe.vae
    z = vae.encode(small_images[:, :, None]).latent_dist.sample(torch.Generator().manual_seed(1))[:, :, 0]
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1)
    torch.testing.assert_close(latents, (z - mean) / std)
    decoded = qwen.decode_latents(latents)
    torch.testing.assert_close(decoded, vae.decode(z[:, :, None]).sample[:, :, 0].clamp(-1, 1), rtol=1e-4, atol=1e-5)


def test_same_prompt_gives_the_vae_round_trip(qwen, small_images):
    assert_same_prompt_round_trip(qwen, small_images, "a red car", n_steps=4, start=1)


def test_bf16_model_float32_state(small_images):
    conditions = [Condition("a cat", guidance=1.0), Condition("a dog", guidance=2.0)]
    assert_bf16_model_float32_state(
        lambda: tiny_qwen_image_pipeline(seed=0),
        lambda pipe: QwenImageBackbone(pipe, max_sequence_length=TEXT_LENGTH),
        conditions,
        _state(2, 1),
        0.6,
        small_images,
    )


def test_runs_with_model_cpu_offload(small_images):
    assert_runs_with_cpu_offload(
        lambda: tiny_qwen_image_pipeline(seed=0),
        lambda pipe: QwenImageBackbone(pipe, max_sequence_length=TEXT_LENGTH),
        small_images,
        "a cat",
        "a dog",
        n_steps=3,
        start=1,
    )


def test_from_pretrained_loads_a_saved_pipeline(tmp_path):
    pipe = tiny_qwen_image_pipeline(seed=2)
    assert_from_pretrained_matches(QwenImageBackbone, pipe, tmp_path, _state(1, 1), 0.5, max_sequence_length=TEXT_LENGTH)
