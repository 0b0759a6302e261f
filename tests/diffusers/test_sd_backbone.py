"""StableDiffusionBackbone on tiny random SD pipelines: batching, CFG, schedule, VAE, dtypes."""

from __future__ import annotations

import pytest
import torch
from backbone_checks import assert_bf16_model_float32_state, generate, pipeline_latents, relative_error

from coupled_sde.backends.base import Condition, ImageBackbone
from coupled_sde.backends.hf import StableDiffusionBackbone, tiny_sd_pipeline

LATENT = (4, 8, 8)  # a 64x64 image


def _state(members: int, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(members, batch, *LATENT, generator=torch.Generator().manual_seed(seed))


def _pipeline_prediction(pipe, x: torch.Tensor, t: int, prompt: str, guidance: float, negative: str | None = None):
    """One member's guided prediction, the way ``StableDiffusionPipeline.__call__`` computes it."""
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative)
    batch = x.shape[0]
    embeds = torch.cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)])
    out = pipe.unet(torch.cat([x, x]), torch.tensor(t), encoder_hidden_states=embeds, return_dict=False)[0]
    out_uncond, out_cond = out.chunk(2)
    return out_uncond + guidance * (out_cond - out_uncond)


def _unet_batches(unet: torch.nn.Module, run) -> list[int]:
    batches: list[int] = []
    handle = unet.register_forward_hook(lambda module, args, output: batches.append(int(args[0].shape[0])))
    try:
        run()
    finally:
        handle.remove()
    return batches


def test_is_an_image_backbone(sd):
    assert isinstance(sd, ImageBackbone)
    assert sd.prediction == "epsilon"
    assert (sd.vae_scale_factor, sd.latent_channels) == (8, 4)


def test_v_prediction_is_reported(sd_v_pipe):
    assert StableDiffusionBackbone(sd_v_pipe).prediction == "v"


def test_batched_members_equal_separate_pipeline_calls(sd, sd_pipe):
    conditions = [
        Condition("a photo of a cat"),  # default CFG 7.5 with the empty prompt as unconditional
        Condition("a photo of a dog", guidance=3.0, negative_prompt="blurry"),
        Condition("a photo of a dog", guidance=1.0),  # no unconditional entry
    ]
    x, t = _state(3, 2), 501
    encoded = sd.encode_conditions(conditions)
    u: list[torch.Tensor] = []
    batches = _unet_batches(sd_pipe.unet, lambda: u.append(sd.predict(x, t, encoded)))
    assert batches == [3 * 2 + 2 * 2]  # one call: K*B conditional plus B per CFG member
    (u,) = u
    assert u.shape == x.shape and u.dtype == torch.float32

    torch.testing.assert_close(u[0], _pipeline_prediction(sd_pipe, x[0], t, "a photo of a cat", 7.5), rtol=1e-5, atol=1e-5)
    expected = _pipeline_prediction(sd_pipe, x[1], t, "a photo of a dog", 3.0, negative="blurry")
    torch.testing.assert_close(u[1], expected, rtol=1e-5, atol=1e-5)
    expected = _pipeline_prediction(sd_pipe, x[2], t, "a photo of a dog", 1.0)
    torch.testing.assert_close(u[2], expected, rtol=1e-5, atol=1e-5)


def test_guidance_and_negative_prompt_matter(sd):
    x = _state(1, 1).expand(3, -1, -1, -1, -1).contiguous()
    conditions = [Condition("a cat", guidance=2.0), Condition("a cat", guidance=8.0)]
    encoded = sd.encode_conditions([*conditions, Condition("a cat", guidance=8.0, negative_prompt="a dog")])
    u = sd.predict(x, 300, encoded)
    assert (u[0] - u[1]).abs().max() > 1e-3 and (u[1] - u[2]).abs().max() > 1e-3


def test_true_cfg_is_rejected_and_ignored_negatives_warn(sd):
    with pytest.raises(ValueError, match="true_cfg"):
        sd.encode_conditions([Condition("a cat", negative_prompt="a dog", true_cfg=2.0)])
    with pytest.warns(UserWarning, match="negative_prompt is ignored"):
        sd.encode_conditions([Condition("a cat", guidance=1.0, negative_prompt="a dog")])


def test_alphas_cumprod_is_float64_and_matches_the_scheduler(sd, sd_pipe):
    ac = sd.schedule.alphas_cumprod
    assert ac.dtype == torch.float64 and ac.shape == (1000,)
    torch.testing.assert_close(ac.float(), sd_pipe.scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)
    assert sd.schedule.final_alpha_cumprod == pytest.approx(float(ac[0]))  # set_alpha_to_one=False


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_alphas_cumprod_other_beta_schedules(sd_pipe, schedule):
    from diffusers import DDIMScheduler

    from coupled_sde.backends.hf.stable_diffusion import alphas_cumprod_float64

    scheduler = DDIMScheduler.from_config(sd_pipe.scheduler.config, beta_schedule=schedule)
    torch.testing.assert_close(alphas_cumprod_float64(scheduler).float(), scheduler.alphas_cumprod, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_steps", [1, 7, 50, 1000])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_ddim(sd_pipe, n_steps, spacing):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(sd_pipe.scheduler.config, timestep_spacing=spacing)
    backbone = StableDiffusionBackbone(tiny_pipe_with(sd_pipe, scheduler))
    scheduler.set_timesteps(n_steps)
    timesteps = backbone.schedule.timesteps(n_steps)
    assert timesteps.dtype == torch.int64
    assert torch.equal(timesteps, scheduler.timesteps)


def tiny_pipe_with(pipe, scheduler):
    """The same components with another scheduler (``components`` shares the modules)."""
    return type(pipe)(**{**pipe.components, "scheduler": scheduler})


def test_sd_default_timesteps(sd):
    timesteps = sd.schedule.timesteps(50)
    assert timesteps[0] == 981 and timesteps[-1] == 1 and torch.all(timesteps[1:] < timesteps[:-1])
    with pytest.raises(ValueError, match="n_steps"):
        sd.schedule.timesteps(0)


def test_encode_decode_shapes_and_seeds(sd, sd_pipe, images):
    latents = sd.encode_images(images, generator=torch.Generator().manual_seed(1))
    assert latents.shape == (2, *LATENT) and latents.dtype == torch.float32
    assert torch.equal(latents, sd.encode_images(images, generator=torch.Generator().manual_seed(1)))
    z = sd_pipe.vae.encode(images).latent_dist.sample(torch.Generator().manual_seed(1))
    torch.testing.assert_close(latents, z * sd_pipe.vae.config.scaling_factor)

    decoded = sd.decode_latents(latents)
    assert decoded.shape == images.shape and decoded.dtype == torch.float32
    expected = sd_pipe.vae.decode(latents / sd_pipe.vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(decoded, expected)


def test_per_sample_generators_equal_single_image_encodes(sd, images):
    batch = sd.encode_images(images, generator=[torch.Generator().manual_seed(s) for s in (5, 6)])
    for b, seed in enumerate((5, 6)):
        single = sd.encode_images(images[b : b + 1], generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(batch[b : b + 1], single, rtol=1e-5, atol=1e-5)


def test_invalid_size_names_the_nearest_valid_one(sd):
    with pytest.raises(ValueError, match="nearest valid size is 64x72"):
        sd.encode_images(torch.zeros(1, 3, 60, 70))
    assert sd.latent_shape(512, 768) == (4, 64, 96)


def test_bf16_model_float32_state(images):
    conditions = [Condition("a cat", guidance=1.0), Condition("a dog", guidance=2.0)]  # CFG amplifies bf16 error
    assert_bf16_model_float32_state(
        lambda: tiny_sd_pipeline(seed=0), StableDiffusionBackbone, conditions, _state(2, 1), 700, images
    )


def test_float16_vae_is_upcast_when_its_config_asks(sd_pipe, images):
    pipe = tiny_sd_pipeline(seed=0)
    pipe.vae.to(torch.float16)
    backbone = StableDiffusionBackbone(pipe)
    latents = backbone.encode_images(images, generator=torch.Generator().manual_seed(0))
    assert pipe.vae.dtype == torch.float16  # restored afterwards
    expected = StableDiffusionBackbone(sd_pipe).encode_images(images, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(latents, expected, rtol=1e-2, atol=1e-2)


def test_from_pretrained_loads_a_saved_pipeline(tmp_path):
    pipe = tiny_sd_pipeline(seed=3, prediction_type="v_prediction")
    pipe.save_pretrained(tmp_path)
    backbone = StableDiffusionBackbone.from_pretrained(str(tmp_path), torch_dtype=torch.float32)
    assert backbone.prediction == "v"
    x = _state(1, 1)
    u = backbone.predict(x, 10, backbone.encode_conditions([Condition("a cat")]))
    reference = StableDiffusionBackbone(pipe)
    torch.testing.assert_close(u, reference.predict(x, 10, reference.encode_conditions([Condition("a cat")])))


@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_generation_and_guidance_rescale_match_the_pipeline(sd_pipe, sd_v_pipe, rescale):
    """The DDIM chain equals ``StableDiffusionPipeline``'s own loop, with its ``guidance_rescale`` too
    (Lin et al. 2024; on the epsilon and the v-prediction model)."""
    for pipe in (sd_pipe, sd_v_pipe):
        backbone = StableDiffusionBackbone(pipe, guidance_rescale=rescale)
        x_T = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(4))
        ours, _ = generate(backbone, x_T, Condition("a photo of a cat", guidance=7.5), 4)
        reference = pipeline_latents(pipe, x_T, "a photo of a cat", 4, 32, 32, guidance_scale=7.5, guidance_rescale=rescale)
        assert relative_error(ours, reference) < 1e-5, relative_error(ours, reference)
        if rescale:
            plain = pipeline_latents(pipe, x_T, "a photo of a cat", 4, 32, 32, guidance_scale=7.5)
            assert relative_error(plain, reference) > 1e-3
