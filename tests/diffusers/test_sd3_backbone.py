"""StableDiffusion3Backbone on a tiny random SD3 pipeline: batched CFG, schedule, parity with the pipeline, VAE, dtypes."""

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
from coupled_sde.backends.hf.sd3 import SkipLayerGuidance, StableDiffusion3Backbone, sd3_sigmas
from coupled_sde.backends.hf.tiny_backbones import tiny_sd3_pipeline
from coupled_sde.editing import flowedit
from coupled_sde.editing.registry import resolve_settings

LATENT = (16, 4, 4)  # a 32x32 image
T5_LENGTH = 16


@pytest.fixture(scope="session")
def sd3_pipe():
    return tiny_sd3_pipeline(seed=0)


@pytest.fixture(scope="session")
def sd3(sd3_pipe):
    return StableDiffusion3Backbone(sd3_pipe, max_sequence_length=T5_LENGTH)


@pytest.fixture()
def small_images():
    return gradient_images(32, 32, lambda first: torch.sin(3 * first))


def _state(members: int, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(members, batch, *LATENT, generator=torch.Generator().manual_seed(seed))


def _pipeline_prediction(pipe, x, sigma, prompt, guidance, negative=None):
    """One member's CFG prediction the way ``StableDiffusion3Pipeline.__call__`` computes it."""
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
        prompt, None, None, negative_prompt=negative, max_sequence_length=T5_LENGTH, do_classifier_free_guidance=True
    )
    b = x.shape[0]
    out = pipe.transformer(
        hidden_states=torch.cat([x, x]),
        timestep=torch.full((2 * b,), sigma * 1000),
        encoder_hidden_states=torch.cat([neg.expand(b, -1, -1), embeds.expand(b, -1, -1)]),
        pooled_projections=torch.cat([neg_pooled.expand(b, -1), pooled.expand(b, -1)]),
        return_dict=False,
    )[0]
    u_uncond, u_cond = out.chunk(2)
    return u_uncond + guidance * (u_cond - u_uncond)


def test_is_a_flow_image_backbone(sd3):
    assert isinstance(sd3, ImageBackbone) and sd3.prediction == "flow"
    assert (sd3.vae_scale_factor, sd3.latent_channels, sd3.image_multiple) == (8, 16, 16)
    assert sd3.defaults["flowedit"] == {"steps": 50, "n_max": 33, "guidance": 13.5, "source_guidance": 3.5}
    from coupled_sde.backends.registry import backbone_class, pipeline_backbone

    assert backbone_class("sd3") is pipeline_backbone("StableDiffusion3Pipeline") is StableDiffusion3Backbone


def test_members_and_cfg_rows_in_one_call(sd3, sd3_pipe):
    conditions = [
        Condition("a photo of a cat", guidance=3.5),
        Condition("a photo of a dog", guidance=13.5, negative_prompt="a blue sky"),
        Condition("a painting of a dog", guidance=1.0),  # no CFG row
    ]
    x, sigma = _state(3, 2), 0.6
    encoded = sd3.encode_conditions(conditions)
    with CallCounter(sd3_pipe.transformer) as calls:
        u = sd3.predict(x, sigma, encoded)
    assert calls.batches == [3 * 2 + 2 * 2]  # K*B member rows plus B unconditional rows per guided member
    assert u.shape == x.shape and u.dtype == torch.float32
    torch.testing.assert_close(u[0], _pipeline_prediction(sd3_pipe, x[0], sigma, "a photo of a cat", 3.5), rtol=1e-5, atol=1e-5)
    expected = _pipeline_prediction(sd3_pipe, x[1], sigma, "a photo of a dog", 13.5, negative="a blue sky")
    torch.testing.assert_close(u[1], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        u[2], _pipeline_prediction(sd3_pipe, x[2], sigma, "a painting of a dog", 1.0), rtol=1e-5, atol=1e-5
    )


def test_knobs_that_do_not_apply(sd3):
    with pytest.raises(ValueError, match="true_cfg"):
        sd3.encode_conditions([Condition("a cat", true_cfg=2.0, negative_prompt="a dog")])
    with pytest.warns(UserWarning, match="negative_prompt is ignored"):
        sd3.encode_conditions([Condition("a cat", guidance=1.0, negative_prompt="a dog")])
    with pytest.raises(ValueError, match="channels"):
        sd3.predict(torch.zeros(1, 1, 4, 4, 4), 0.5, sd3.encode_conditions([Condition("a cat")]))
    with pytest.raises(ValueError, match="nearest valid size is 32x48"):
        sd3.encode_images(torch.zeros(1, 3, 30, 40))


@pytest.mark.parametrize("n_steps", [1, 4, 50])
def test_sigmas_are_the_pipelines(sd3, sd3_pipe, n_steps):
    sigmas = sd3.schedule.grid(n_steps, LATENT).times
    assert sigmas.dtype == torch.float64 and sigmas.shape == (n_steps + 1,) and sigmas[0] == 1 and sigmas[-1] == 0
    pipe = quiet_copy(sd3_pipe)
    pipe(prompt="a cat", height=32, width=32, num_inference_steps=n_steps, output_type="latent", max_sequence_length=T5_LENGTH)
    torch.testing.assert_close(sigmas.float(), pipe.scheduler.sigmas, rtol=1e-6, atol=1e-7)


def test_dynamic_shift_config_is_the_pipelines(sd3_pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(sd3_pipe.scheduler.config, use_dynamic_shifting=True)
    pipe = quiet_copy(sd3_pipe)
    pipe.scheduler = scheduler
    pipe(prompt="a cat", height=64, width=32, num_inference_steps=5, output_type="latent", max_sequence_length=T5_LENGTH)
    torch.testing.assert_close(sd3_sigmas(5, 4 * 2, scheduler).float(), pipe.scheduler.sigmas, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("guidance", [1.0, 4.5])
def test_generation_matches_the_pipelines_own_loop(sd3, sd3_pipe, guidance):
    """Our ODE solve (Euler on the pipeline's sigmas) from the same initial noise is the pipeline's sampling loop."""
    n_steps = 4
    x_T = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(11))
    ours, _ = generate(sd3, x_T, Condition("a photo of a cat", guidance=guidance), n_steps)
    reference = pipeline_latents(
        sd3_pipe, x_T, "a photo of a cat", n_steps, 32, 32, guidance_scale=guidance, max_sequence_length=T5_LENGTH
    )
    assert relative_error(ours, reference) < 1e-5, relative_error(ours, reference)


def test_same_prompt_gives_the_vae_round_trip(sd3, small_images):
    assert_same_prompt_round_trip(sd3, small_images, "a red car", n_steps=6, start=1)


def test_flowedit_with_the_sd3_defaults_runs_batched(sd3, small_images):
    x0 = sd3.encode_images(small_images, torch.Generator().manual_seed(0))
    resolved = resolve_settings(sd3, "flowedit")
    assert (resolved["steps"], resolved["n_max"], resolved["guidance"], resolved["source_guidance"]) == (50, 33, 13.5, 3.5)
    with CallCounter(sd3.pipe.transformer) as calls:
        out = flowedit(sd3, x0, "a cat", "a dog", n_steps=6, n_max=4)  # the published guidance, fewer steps
    assert calls.batches == [2 * 2 * 2] * 4  # (source, target) x batch 2, each with its CFG row, one call per active step
    assert out.settings["guidance"] == 13.5 and out.settings["source_guidance"] == 3.5
    assert torch.isfinite(out.latents).all() and not torch.equal(out.latents, x0)


def test_bf16_model_float32_state(small_images):
    conditions = [Condition("a cat", guidance=1.0), Condition("a dog", guidance=2.0)]
    assert_bf16_model_float32_state(
        lambda: tiny_sd3_pipeline(seed=0),
        lambda pipe: StableDiffusion3Backbone(pipe, max_sequence_length=T5_LENGTH),
        conditions,
        _state(2, 1),
        0.7,
        small_images,
    )


def test_runs_with_model_cpu_offload(small_images):
    assert_runs_with_cpu_offload(
        lambda: tiny_sd3_pipeline(seed=0),
        lambda pipe: StableDiffusion3Backbone(pipe, max_sequence_length=T5_LENGTH),
        small_images,
        "a cat",
        "a dog",
        n_steps=3,
        start=1,
    )


def test_from_pretrained_loads_a_saved_pipeline(tmp_path):
    from coupled_sde.editing.loading import as_backbone

    pipe = tiny_sd3_pipeline(seed=2)
    assert_from_pretrained_matches(StableDiffusion3Backbone, pipe, tmp_path, _state(1, 1), 0.5, max_sequence_length=T5_LENGTH)
    assert type(as_backbone(pipe)) is StableDiffusion3Backbone  # by pipeline class


def test_skip_layer_guidance_matches_the_pipeline(sd3_pipe):
    """SD3.5's skip-layer guidance on its steps N start < i < N stop (here 1, 2, 3 of 6): the pipeline's loop,
    one extra transformer call per evaluation inside the window, and a visible effect."""
    n_steps, layers = 6, (1,)
    pipe = tiny_sd3_pipeline(seed=2, layers=2)
    plain = StableDiffusion3Backbone(pipe, max_sequence_length=T5_LENGTH)
    slg = plain.pipeline_skip_layer_guidance(n_steps, 32, 32, layers=layers, scale=2.0, start=0.1, stop=0.6)
    sigmas = plain.schedule.sigmas(n_steps, 4)
    assert slg.window == (float(sigmas[3]), float(sigmas[1]))
    guided = StableDiffusion3Backbone(pipe, max_sequence_length=T5_LENGTH, skip_layer_guidance=slg)
    x_T = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(11))
    with CallCounter(pipe.transformer) as calls:
        ours, _ = generate(guided, x_T, Condition("a photo of a cat", guidance=4.5), n_steps)
    assert calls.batches == [4, 4, 2, 4, 2, 4, 2, 4, 4]  # cond + uncond rows; the 3 skip calls on the 2 cond rows
    reference = pipeline_latents(
        pipe, x_T, "a photo of a cat", n_steps, 32, 32, guidance_scale=4.5, max_sequence_length=T5_LENGTH,
        skip_guidance_layers=list(layers), skip_layer_guidance_scale=2.0, skip_layer_guidance_start=0.1,
        skip_layer_guidance_stop=0.6,
    )  # fmt: skip
    without, _ = generate(plain, x_T, Condition("a photo of a cat", guidance=4.5), n_steps)
    assert relative_error(ours, reference) < 1e-5, relative_error(ours, reference)
    assert relative_error(without, reference) > 1e-3
    unguided, _ = generate(guided, x_T, Condition("a photo of a cat", guidance=1.0), n_steps)  # no CFG, no SLG
    assert torch.equal(unguided, generate(plain, x_T, Condition("a photo of a cat", guidance=1.0), n_steps)[0])
    assert plain.pipeline_skip_layer_guidance(n_steps, 32, 32, layers=layers, start=0.5, stop=0.6) is None
    with pytest.raises(ValueError, match="exceed the transformer's 2 blocks"):
        StableDiffusion3Backbone(pipe, skip_layer_guidance=SkipLayerGuidance((2,)))
    with pytest.raises(ValueError, match="window must satisfy"):
        SkipLayerGuidance((0,), window=(0.5, 0.2))
