"""FluxBackbone on tiny random FLUX pipelines: batching, guidance, true CFG, schedule, VAE, dtypes."""

from __future__ import annotations

import copy

import pytest
import torch
from reference_flux_sync_sde import flux_reference_sigmas, reference_flux_sync_sde

from coupled_sde.backends.base import Condition, ImageBackbone
from coupled_sde.backends.hf import FluxBackbone, tiny_flux_pipeline
from coupled_sde.backends.hf.flux import calculate_shift, flux_sigmas, pack_latents, unpack_latents

LATENT = (16, 8, 8)  # a 64x64 image
MAX_SEQUENCE_LENGTH = 32  # T5 prompt length; the same as the backbone fixtures' (conftest.py)


def _state(members: int, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(members, batch, *LATENT, generator=torch.Generator().manual_seed(seed))


def _pipeline_velocity(pipe, x: torch.Tensor, sigma: float, prompt: str, guidance: float | None) -> torch.Tensor:
    """``u`` for one member, computed the way ``FluxPipeline.__call__`` does (its own packing and ids)."""
    batch, channels, height, width = x.shape
    embeds, pooled, text_ids = pipe.encode_prompt(prompt, max_sequence_length=MAX_SEQUENCE_LENGTH)
    vae_scale = pipe.vae_scale_factor
    out = pipe.transformer(
        hidden_states=pipe._pack_latents(x, batch, channels, height, width),
        timestep=torch.full((batch,), sigma),
        guidance=None if guidance is None else torch.full((batch,), guidance),
        pooled_projections=pooled.expand(batch, -1),
        encoder_hidden_states=embeds.expand(batch, -1, -1),
        txt_ids=text_ids,
        img_ids=pipe._prepare_latent_image_ids(batch, height // 2, width // 2, x.device, x.dtype),
        return_dict=False,
    )[0]
    return pipe._unpack_latents(out, height * vae_scale, width * vae_scale, vae_scale)


class _CallCounter:
    """Forward hook recording the batch size of every transformer call."""

    def __init__(self, module: torch.nn.Module):
        self.batches: list[int] = []
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        self.batches.append(int(kwargs["hidden_states"].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def test_is_an_image_backbone(flux):
    assert isinstance(flux, ImageBackbone)
    assert flux.prediction == "flow"
    assert (flux.vae_scale_factor, flux.latent_channels) == (8, 16)


def test_tiny_pipelines_are_seeded_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    first, again, other = tiny_flux_pipeline(seed=7), tiny_flux_pipeline(seed=7), tiny_flux_pipeline(seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        weights, same, different = (getattr(p, name).state_dict() for p in (first, again, other))
        assert all(torch.equal(weights[key], same[key]) for key in weights)
        assert not all(torch.equal(weights[key], different[key]) for key in weights)


def test_pack_unpack_match_the_pipeline(flux_pipe):
    x = torch.randn(3, 16, 6, 10)
    packed = pack_latents(x)
    assert torch.equal(packed, flux_pipe._pack_latents(x, 3, 16, 6, 10))
    assert torch.equal(unpack_latents(packed, 6, 10), x)


def test_batched_members_equal_separate_pipeline_calls(flux, flux_pipe):
    conditions = [
        Condition("a photo of a cat"),  # default guidance 1.0
        Condition("a photo of a dog", guidance=3.5),
        Condition("a painting of a dog", guidance=2.0, negative_prompt="a cat", true_cfg=1.5),
    ]
    x, sigma = _state(3, 2), 0.7
    encoded = flux.encode_conditions(conditions)
    with _CallCounter(flux_pipe.transformer) as calls:
        u = flux.predict(x, sigma, encoded)
    assert calls.batches == [3 * 2 + 1 * 2]  # one call: K*B members plus B negative entries
    assert u.shape == x.shape and u.dtype == torch.float32

    for k, c in enumerate(conditions[:2]):
        expected = _pipeline_velocity(flux_pipe, x[k], sigma, c.prompt, c.guidance or 1.0)
        torch.testing.assert_close(u[k], expected, rtol=1e-5, atol=1e-5)
    u_pos = _pipeline_velocity(flux_pipe, x[2], sigma, "a painting of a dog", 2.0)
    u_neg = _pipeline_velocity(flux_pipe, x[2], sigma, "a cat", 2.0)
    torch.testing.assert_close(u[2], u_neg + 1.5 * (u_pos - u_neg), rtol=1e-5, atol=1e-5)


def test_identical_prompts_are_encoded_once(flux, flux_pipe, monkeypatch):
    seen: list[list[str]] = []
    original = flux_pipe.encode_prompt

    def spy(prompt, **kwargs):
        seen.append(list(prompt))
        return original(prompt, **kwargs)

    monkeypatch.setattr(flux_pipe, "encode_prompt", spy)
    encoded = flux.encode_conditions(
        [Condition("a cat"), Condition("a dog", negative_prompt="a cat", true_cfg=2.0), Condition("a cat", guidance=2.0)]
    )
    assert seen == [["a cat", "a dog"]]
    assert encoded.prompt_rows.tolist() == [0, 1, 0] and encoded.negative_rows.tolist() == [0]
    assert encoded.guidance.tolist() == [1.0, 1.0, 2.0]


def test_guidance_reaches_the_dev_model(flux):
    x = _state(1, 1).expand(2, -1, -1, -1, -1).contiguous()
    encoded = flux.encode_conditions([Condition("a cat", guidance=1.0), Condition("a cat", guidance=4.0)])
    u = flux.predict(x, 0.5, encoded)
    assert (u[0] - u[1]).abs().max() > 1e-3
    alone = flux.predict(x[1:], 0.5, flux.encode_conditions([Condition("a cat", guidance=4.0)]))
    torch.testing.assert_close(u[1], alone[0], rtol=1e-5, atol=1e-5)


def test_guidance_is_ignored_by_schnell(schnell, schnell_pipe):
    x = _state(1, 2).expand(2, -1, -1, -1, -1).contiguous()
    with pytest.warns(UserWarning, match="no guidance embedding"):
        encoded = schnell.encode_conditions([Condition("a cat", guidance=1.0), Condition("a cat", guidance=4.0)])
    u = schnell.predict(x, 0.5, encoded)
    torch.testing.assert_close(u[0], u[1], rtol=0, atol=0)
    torch.testing.assert_close(u[0], _pipeline_velocity(schnell_pipe, x[0], 0.5, "a cat", None), rtol=1e-5, atol=1e-5)


def test_true_cfg_formula(flux):
    x = _state(1, 2)
    u = flux.predict(x, 0.3, flux.encode_conditions([Condition("a dog", guidance=2.0, negative_prompt="a cat", true_cfg=4.0)]))
    u_pos = flux.predict(x, 0.3, flux.encode_conditions([Condition("a dog", guidance=2.0)]))
    u_neg = flux.predict(x, 0.3, flux.encode_conditions([Condition("a cat", guidance=2.0)]))
    torch.testing.assert_close(u, u_neg + 4.0 * (u_pos - u_neg), rtol=1e-5, atol=1e-5)
    assert (u - u_pos).abs().max() > 1e-3


def test_ignored_knobs_warn(flux):
    with pytest.warns(UserWarning, match="negative_prompt is ignored"):
        encoded = flux.encode_conditions([Condition("a dog", negative_prompt="a cat")])
    assert encoded.cfg_members.numel() == 0
    with pytest.warns(UserWarning, match="true_cfg=3.0 is ignored"):
        flux.encode_conditions([Condition("a dog", true_cfg=3.0)])


def test_rejects_mismatched_states(flux):
    encoded = flux.encode_conditions([Condition("a cat")])
    with pytest.raises(ValueError, match="members"):
        flux.predict(_state(2, 1), 0.5, encoded)
    with pytest.raises(ValueError, match="even"):
        flux.predict(torch.zeros(1, 1, 16, 7, 8), 0.5, encoded)
    with pytest.raises(TypeError, match="text prompts"):
        flux.encode_conditions([Condition(3)])


@pytest.mark.parametrize("n_steps", [1, 4, 28])
@pytest.mark.parametrize("image_size", [(64, 64), (32, 96)])
@pytest.mark.parametrize("which", ["flux", "schnell"])
def test_sigmas_match_the_pipeline(request, which, image_size, n_steps):
    """The schedule equals what ``FluxPipeline.__call__`` leaves in its scheduler after a generation."""
    backbone = request.getfixturevalue(which)
    pipe = backbone.pipe
    height, width = image_size
    latent_shape = backbone.latent_shape(height, width)
    sigmas = backbone.schedule.grid(n_steps, latent_shape).times
    assert sigmas.dtype == torch.float64 and sigmas.shape == (n_steps + 1,) and sigmas[-1] == 0
    assert torch.all(sigmas[1:] < sigmas[:-1])

    pipe_copy = copy.copy(pipe)  # a shallow copy shares the modules but gets its own scheduler
    pipe_copy.scheduler = copy.deepcopy(pipe.scheduler)
    pipe_copy.set_progress_bar_config(disable=True)
    pipe_copy(
        "a cat",
        height=height,
        width=width,
        num_inference_steps=n_steps,
        output_type="latent",
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    torch.testing.assert_close(sigmas.float(), pipe_copy.scheduler.sigmas, rtol=1e-6, atol=1e-7)


def test_sigmas_at_1024_match_the_scheduler_and_the_paper(flux, flux_pipe):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_calculate_shift

    latent_shape = (16, 128, 128)  # 1024 x 1024 pixels, 4096 tokens
    mu = diffusers_calculate_shift(64 * 64, 256, 4096, 0.5, 1.15)
    assert calculate_shift(64 * 64) == pytest.approx(mu, rel=1e-15)
    scheduler = copy.deepcopy(flux_pipe.scheduler)
    s = torch.linspace(1.0, 1.0 / 28, 28, dtype=torch.float64)
    scheduler.set_timesteps(sigmas=s.tolist(), mu=mu)
    sigmas = flux.schedule.grid(28, latent_shape).times
    torch.testing.assert_close(sigmas.float(), scheduler.sigmas, rtol=1e-6, atol=1e-7)
    assert sigmas[4] == pytest.approx(0.95, abs=0.01)  # the reference start t0 = sigma_{i0=4}
    torch.testing.assert_close(sigmas, flux_reference_sigmas(flux_pipe, 28, 128, 128), rtol=1e-15, atol=0)


def test_sigmas_delegate_exotic_scheduler_configs(flux_pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(flux_pipe.scheduler.config, use_karras_sigmas=True)
    sigmas = flux_sigmas(6, 16, scheduler)
    reference = copy.deepcopy(scheduler)
    reference.set_timesteps(sigmas=torch.linspace(1, 1 / 6, 6).tolist(), mu=calculate_shift(16))
    assert sigmas.dtype == torch.float64
    torch.testing.assert_close(sigmas.float(), reference.sigmas)


def test_encode_decode_shapes_and_seeds(flux, flux_pipe, images):
    latents = flux.encode_images(images, generator=torch.Generator().manual_seed(1))
    assert latents.shape == (2, *LATENT) and latents.dtype == torch.float32
    again = flux.encode_images(images, generator=torch.Generator().manual_seed(1))
    other = flux.encode_images(images, generator=torch.Generator().manual_seed(2))
    assert torch.equal(latents, again) and not torch.equal(latents, other)

    # the same as diffusers' own posterior sample, normalised like FluxPipeline
    z = flux_pipe.vae.encode(images).latent_dist.sample(torch.Generator().manual_seed(1))
    config = flux_pipe.vae.config
    torch.testing.assert_close(latents, (z - config.shift_factor) * config.scaling_factor)

    decoded = flux.decode_latents(latents)
    assert decoded.shape == images.shape and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1
    expected = flux_pipe.vae.decode(latents / config.scaling_factor + config.shift_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(decoded, expected)


def test_per_sample_generators_equal_single_image_encodes(flux, images):
    batch = flux.encode_images(images, generator=[torch.Generator().manual_seed(s) for s in (5, 6)])
    for b, seed in enumerate((5, 6)):
        single = flux.encode_images(images[b : b + 1], generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(batch[b : b + 1], single, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one per image"):
        flux.encode_images(images, generator=[torch.Generator()])


def test_invalid_size_names_the_nearest_valid_one(flux):
    with pytest.raises(ValueError, match="nearest valid size is 80x96"):
        flux.encode_images(torch.zeros(1, 3, 72, 100))
    with pytest.raises(ValueError, match="multiples of 16"):
        flux.latent_shape(1000, 1024)
    assert flux.latent_shape(1024, 768) == (16, 128, 96)


def test_bf16_model_float32_state(images):
    pipe = tiny_flux_pipeline(seed=0).to(torch.bfloat16)
    fp32 = FluxBackbone(tiny_flux_pipeline(seed=0), max_sequence_length=MAX_SEQUENCE_LENGTH)
    bf16 = FluxBackbone(pipe, max_sequence_length=MAX_SEQUENCE_LENGTH)
    conditions = [Condition("a cat"), Condition("a dog", guidance=3.0, negative_prompt="a cat", true_cfg=2.0)]
    x = _state(2, 1)
    encoded = bf16.encode_conditions(conditions)
    assert encoded.prompt_embeds.dtype == torch.bfloat16
    u = bf16.predict(x, 0.6, encoded)
    assert u.dtype == torch.float32 and x.dtype == torch.float32
    reference = fp32.predict(x, 0.6, fp32.encode_conditions(conditions))
    assert (u - reference).norm() / reference.norm() < 0.05

    latents = bf16.encode_images(images, generator=torch.Generator().manual_seed(0))
    assert latents.dtype == torch.float32
    decoded = bf16.decode_latents(latents)
    assert decoded.dtype == torch.float32 and decoded.shape == images.shape


def test_reference_sync_sde_reconstructs_with_equal_prompts(flux_pipe):
    """The reference loop's own sanity check: source == target gives the source latent back, exactly."""
    x0 = torch.randn(1, *LATENT, generator=torch.Generator().manual_seed(3))
    xi = torch.randn(4 - 1, *x0.shape, generator=torch.Generator().manual_seed(4))
    same = reference_flux_sync_sde(flux_pipe, x0, "a cat", "a cat", 4, 1, xi, max_sequence_length=MAX_SEQUENCE_LENGTH)
    assert torch.equal(same, x0)
    edited = reference_flux_sync_sde(flux_pipe, x0, "a cat", "a dog", 4, 1, xi, max_sequence_length=MAX_SEQUENCE_LENGTH)
    assert edited.shape == x0.shape and torch.isfinite(edited).all() and not torch.equal(edited, x0)
    with pytest.raises(ValueError, match="i0"):
        reference_flux_sync_sde(flux_pipe, x0, "a cat", "a dog", 4, 0, xi)


def test_from_pretrained_loads_a_saved_pipeline(tmp_path):
    pipe = tiny_flux_pipeline(seed=2)
    pipe.save_pretrained(tmp_path)
    backbone = FluxBackbone.from_pretrained(str(tmp_path), torch_dtype=torch.float32, device="cpu")
    x = _state(1, 1)
    u = backbone.predict(x, 0.5, backbone.encode_conditions([Condition("a cat")]))
    expected = FluxBackbone(pipe).predict(x, 0.5, FluxBackbone(pipe).encode_conditions([Condition("a cat")]))
    torch.testing.assert_close(u, expected)
