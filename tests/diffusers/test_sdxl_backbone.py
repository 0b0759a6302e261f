"""StableDiffusionXLBackbone on tiny random SDXL pipelines: pooled embeddings, time ids, zero negatives, parity, VAE, dtypes."""

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
    relative_error,
)

from coupled_sde.backends.base import Condition, ImageBackbone
from coupled_sde.backends.hf.sdxl import StableDiffusionXLBackbone
from coupled_sde.backends.hf.tiny_backbones import tiny_sdxl_pipeline

LATENT = (4, 4, 6)  # a 32x48 image


@pytest.fixture(scope="session")
def sdxl_pipe():
    return tiny_sdxl_pipeline(seed=0)


@pytest.fixture(scope="session")
def sdxl(sdxl_pipe):
    return StableDiffusionXLBackbone(sdxl_pipe)


@pytest.fixture(scope="session")
def sdxl_v():
    return StableDiffusionXLBackbone(tiny_sdxl_pipeline(seed=1, prediction_type="v_prediction"))


@pytest.fixture()
def small_images():
    return gradient_images(32, 48, lambda first: torch.cos(2 * first))


def _state(members: int, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(members, batch, *LATENT, generator=torch.Generator().manual_seed(seed))


def _pipeline_prediction(pipe, x, t, prompt, guidance, negative=None):
    """One member's CFG prediction the way ``StableDiffusionXLPipeline.__call__`` computes it (32x48 image)."""
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(prompt, None, "cpu", 1, True, negative_prompt=negative)
    b = x.shape[0]
    time_ids = torch.tensor([[32, 48, 0, 0, 32, 48]], dtype=embeds.dtype).repeat(2 * b, 1)
    out = pipe.unet(
        torch.cat([x, x]),
        torch.tensor(t),
        encoder_hidden_states=torch.cat([neg.expand(b, -1, -1), embeds.expand(b, -1, -1)]),
        added_cond_kwargs={"text_embeds": torch.cat([neg_pooled.expand(b, -1), pooled.expand(b, -1)]), "time_ids": time_ids},
        return_dict=False,
    )[0]
    u_uncond, u_cond = out.chunk(2)
    return u_uncond + guidance * (u_cond - u_uncond)


def test_is_a_vp_image_backbone(sdxl, sdxl_v):
    assert isinstance(sdxl, ImageBackbone)
    assert (sdxl.prediction, sdxl_v.prediction) == ("epsilon", "v")
    schedule = sdxl.schedule
    assert schedule.alphas_cumprod.dtype == torch.float64 and schedule.final_alpha_cumprod == pytest.approx(
        float(schedule.alphas_cumprod[0])
    )
    assert schedule.timesteps(50)[:2].tolist() == [981, 961] and schedule.timesteps(50)[-1] == 1
    torch.testing.assert_close(schedule.alphas_cumprod.float(), sdxl.pipe.scheduler.alphas_cumprod)
    from coupled_sde.backends.registry import pipeline_backbone

    assert pipeline_backbone("StableDiffusionXLPipeline") is StableDiffusionXLBackbone and sdxl.image_multiple == 8
    assert sdxl.pipe.config.force_zeros_for_empty_prompt


def test_members_and_cfg_rows_in_one_call(sdxl, sdxl_pipe):
    conditions = [
        Condition("a photo of a cat", guidance=5.0),  # no negative: zero unconditional embeddings (SDXL's default)
        Condition("a photo of a dog", guidance=7.5, negative_prompt="a blue sky"),
        Condition("a painting of a dog", guidance=1.0),
    ]
    x, t = _state(3, 2), 601
    encoded = sdxl.encode_conditions(conditions)
    assert torch.equal(encoded.prompt_embeds[-1], torch.zeros_like(encoded.prompt_embeds[-1]))
    with CallCounter(sdxl_pipe.unet, key="sample") as calls:
        u = sdxl.predict(x, t, encoded)
    assert calls.batches == [3 * 2 + 2 * 2]
    torch.testing.assert_close(u[0], _pipeline_prediction(sdxl_pipe, x[0], t, "a photo of a cat", 5.0), rtol=1e-5, atol=1e-5)
    expected = _pipeline_prediction(sdxl_pipe, x[1], t, "a photo of a dog", 7.5, negative="a blue sky")
    torch.testing.assert_close(u[1], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(u[2], _pipeline_prediction(sdxl_pipe, x[2], t, "a painting of a dog", 1.0), rtol=1e-5, atol=1e-5)


def test_time_ids_follow_the_image_size(sdxl):
    encoded = sdxl.encode_conditions([Condition("a cat", guidance=1.0)])
    x = torch.randn(1, 1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    square = sdxl.predict(x, 500, encoded)
    sdxl_other = StableDiffusionXLBackbone(sdxl.pipe, crops_coords_top_left=(8, 0))
    assert (sdxl_other.predict(x, 500, encoded) - square).abs().max() > 1e-6  # the time ids reach the UNet
    assert sdxl.add_time_ids(32, 32) == (32, 32, 0, 0, 32, 32)


def test_knobs_that_do_not_apply(sdxl):
    with pytest.raises(ValueError, match="true_cfg"):
        sdxl.encode_conditions([Condition("a cat", true_cfg=2.0, negative_prompt="a dog")])
    with pytest.warns(UserWarning, match="negative_prompt is ignored"):
        sdxl.encode_conditions([Condition("a cat", guidance=1.0, negative_prompt="a dog")])
    with pytest.raises(ValueError, match="nearest valid size is 32x40"):
        sdxl.encode_images(torch.zeros(1, 3, 30, 38))


@pytest.mark.parametrize("which", ["sdxl", "sdxl_v"])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_generation_matches_the_pipelines_ddim_loop(request, which, guidance):
    """The DDIM chain of the VP members (eta = 0) from the same initial noise is the pipeline's own loop."""
    backbone = request.getfixturevalue(which)
    n_steps = 4
    x_T = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(4))
    ours, _ = generate(backbone, x_T, Condition("a photo of a cat", guidance=guidance), n_steps)
    reference = pipeline_latents(backbone.pipe, x_T, "a photo of a cat", n_steps, 32, 48, guidance_scale=guidance)
    assert relative_error(ours, reference) < 1e-5, relative_error(ours, reference)


def test_vae_normalisation(sdxl, small_images):
    latents = sdxl.encode_images(small_images, torch.Generator().manual_seed(1))
    vae = sdxl.pipe.vae
    z = vae.encode(small_images).latent_dist.sample(torch.Generator().manual_seed(1))
    torch.testing.assert_close(latents, z * vae.config.scaling_factor)
    torch.testing.assert_close(sdxl.decode_latents(latents), vae.decode(z).sample.clamp(-1, 1), rtol=1e-4, atol=1e-5)


def test_vae_with_latents_mean_and_std_is_normalised_per_channel(small_images):
    pipe = tiny_sdxl_pipeline(seed=0)
    mean, std = [0.1, -0.2, 0.3, 0.0], [0.9, 1.1, 1.3, 0.7]
    pipe.vae.register_to_config(latents_mean=mean, latents_std=std)
    backbone = StableDiffusionXLBackbone(pipe)
    latents = backbone.encode_images(small_images, torch.Generator().manual_seed(1))
    z = pipe.vae.encode(small_images).latent_dist.sample(torch.Generator().manual_seed(1))
    view = (1, 4, 1, 1)
    expected = (z - torch.tensor(mean).view(view)) * pipe.vae.config.scaling_factor / torch.tensor(std).view(view)
    torch.testing.assert_close(latents, expected)
    # the pipeline's de-normalisation before decoding: latents * std / scaling_factor + mean
    z_back = latents * torch.tensor(std).view(view) / pipe.vae.config.scaling_factor + torch.tensor(mean).view(view)
    torch.testing.assert_close(
        backbone.decode_latents(latents), pipe.vae.decode(z_back).sample.clamp(-1, 1), rtol=1e-4, atol=1e-5
    )


def test_same_prompt_gives_the_vae_round_trip(sdxl, small_images):
    assert_same_prompt_round_trip(sdxl, small_images, "a red car", n_steps=5, start=1)


def test_bf16_model_float32_state(small_images):
    conditions = [Condition("a cat", guidance=1.0), Condition("a dog", guidance=2.0)]
    assert_bf16_model_float32_state(
        lambda: tiny_sdxl_pipeline(seed=0), StableDiffusionXLBackbone, conditions, _state(2, 1), 700, small_images
    )


def test_runs_with_model_cpu_offload(small_images):
    assert_runs_with_cpu_offload(
        lambda: tiny_sdxl_pipeline(seed=0), StableDiffusionXLBackbone, small_images, "a cat", "a dog", n_steps=3, start=1
    )


def test_from_pretrained_loads_a_saved_pipeline(tmp_path):
    pipe = tiny_sdxl_pipeline(seed=2, prediction_type="v_prediction")
    loaded = assert_from_pretrained_matches(StableDiffusionXLBackbone, pipe, tmp_path, _state(1, 1), 10)
    assert loaded.prediction == "v"


@pytest.mark.parametrize("which", ["sdxl", "sdxl_v"])
def test_guidance_rescale_matches_the_pipeline(request, which):
    """``guidance_rescale = 0.7`` (Lin et al. 2024) is the pipeline's, and it changes the samples."""
    pipe = request.getfixturevalue(which).pipe
    rescaled = StableDiffusionXLBackbone(pipe, guidance_rescale=0.7)
    x_T = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(4))
    ours, _ = generate(rescaled, x_T, Condition("a photo of a cat", guidance=5.0), 4)
    reference = pipeline_latents(pipe, x_T, "a photo of a cat", 4, 32, 48, guidance_scale=5.0, guidance_rescale=0.7)
    plain = pipeline_latents(pipe, x_T, "a photo of a cat", 4, 32, 48, guidance_scale=5.0)
    assert relative_error(ours, reference) < 1e-5, relative_error(ours, reference)
    assert relative_error(plain, reference) > 1e-3
    with pytest.raises(ValueError, match=r"guidance_rescale must lie in \[0, 1\]"):
        StableDiffusionXLBackbone(pipe, guidance_rescale=1.5)
