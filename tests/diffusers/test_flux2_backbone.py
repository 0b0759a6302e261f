"""Flux2Backbone (FLUX.2 dev) and Flux2KleinBackbone on tiny random pipelines: batching, guidance, schedule, parity, VAE."""

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
from coupled_sde.backends.hf.flux2 import Flux2Backbone, Flux2KleinBackbone, empirical_mu, patchify, unpatchify
from coupled_sde.backends.hf.tiny_backbones import tiny_flux2_klein_pipeline, tiny_flux2_pipeline
from coupled_sde.editing import edit_latents

LATENT = (16, 2, 3)  # a 32x48 image: 4 VAE channels x 2x2 patches, 2x3 tokens
TEXT_LENGTH = 24


@pytest.fixture(scope="session")
def flux2_pipe():
    return tiny_flux2_pipeline(seed=0)


@pytest.fixture(scope="session")
def flux2(flux2_pipe):
    return Flux2Backbone(flux2_pipe, max_sequence_length=TEXT_LENGTH)


@pytest.fixture(scope="session")
def klein():
    return Flux2KleinBackbone(tiny_flux2_klein_pipeline(seed=0, distilled=True), max_sequence_length=TEXT_LENGTH)


@pytest.fixture(scope="session")
def klein_base():
    return Flux2KleinBackbone(tiny_flux2_klein_pipeline(seed=1, distilled=False), max_sequence_length=TEXT_LENGTH)


@pytest.fixture()
def small_images():
    return gradient_images(32, 48, lambda first: torch.sin(2 * first))


def _state(members: int, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(members, batch, *LATENT, generator=torch.Generator().manual_seed(seed))


def _pipeline_velocity(pipe, x, sigma, prompt, guidance=None):
    """One member's prediction the way the FLUX.2 pipelines call the transformer (their packing and ids)."""
    embeds, text_ids = pipe.encode_prompt(prompt, max_sequence_length=TEXT_LENGTH)
    b, c, h, w = x.shape
    tokens = pipe._pack_latents(x)
    out = pipe.transformer(
        hidden_states=tokens,
        timestep=torch.full((b,), sigma),
        guidance=None if guidance is None else torch.full((b,), guidance),
        encoder_hidden_states=embeds.expand(b, -1, -1),
        txt_ids=text_ids.expand(b, -1, -1),
        img_ids=pipe._prepare_latent_ids(x),
        return_dict=False,
    )[0]
    return out.permute(0, 2, 1).reshape(b, c, h, w)


def test_are_flow_image_backbones(flux2, klein):
    for backbone in (flux2, klein):
        assert isinstance(backbone, ImageBackbone) and backbone.prediction == "flow"
        assert (backbone.image_multiple, backbone.latent_channels) == (16, 16)
        assert backbone.latent_shape(32, 48) == LATENT
    assert flux2.has_guidance_embedding and klein.is_distilled
    assert klein.defaults["sync-sde"] == {"steps": 4, "start": 1}
    from coupled_sde.backends.registry import pipeline_backbone

    assert pipeline_backbone("Flux2Pipeline") is Flux2Backbone and pipeline_backbone("Flux2KleinPipeline") is Flux2KleinBackbone


def test_patchify_matches_the_pipeline(flux2_pipe):
    z = torch.randn(2, 4, 6, 8)
    assert torch.equal(patchify(z), flux2_pipe._patchify_latents(z))
    assert torch.equal(unpatchify(patchify(z)), z)


def test_dev_members_guidance_and_true_cfg_in_one_call(flux2, flux2_pipe):
    conditions = [
        Condition("a photo of a cat"),  # default guidance 4.0
        Condition("a photo of a dog", guidance=2.0),
        Condition("a painting of a dog", guidance=3.0, negative_prompt="a cat", true_cfg=1.5),
    ]
    x, sigma = _state(3, 2), 0.7
    encoded = flux2.encode_conditions(conditions)
    with CallCounter(flux2_pipe.transformer) as calls:
        u = flux2.predict(x, sigma, encoded)
    assert calls.batches == [3 * 2 + 2]
    for k, (prompt, g) in enumerate([("a photo of a cat", 4.0), ("a photo of a dog", 2.0)]):
        torch.testing.assert_close(u[k], _pipeline_velocity(flux2_pipe, x[k], sigma, prompt, g), rtol=1e-5, atol=1e-5)
    u_pos = _pipeline_velocity(flux2_pipe, x[2], sigma, "a painting of a dog", 3.0)
    u_neg = _pipeline_velocity(flux2_pipe, x[2], sigma, "a cat", 3.0)
    torch.testing.assert_close(u[2], u_neg + 1.5 * (u_pos - u_neg), rtol=1e-5, atol=1e-5)


def test_klein_base_cfg_rows_and_distilled_has_none(klein, klein_base):
    x, sigma = _state(2, 2), 0.4
    encoded = klein_base.encode_conditions(
        [Condition("a cat", guidance=4.0), Condition("a dog", guidance=3.0, negative_prompt="a tree")]
    )
    with CallCounter(klein_base.pipe.transformer) as calls:
        u = klein_base.predict(x, sigma, encoded)
    assert calls.batches == [2 * 2 + 2 * 2]
    pipe = klein_base.pipe
    for k, (prompt, negative, g) in enumerate([("a cat", "", 4.0), ("a dog", "a tree", 3.0)]):
        cond, uncond = (_pipeline_velocity(pipe, x[k], sigma, text) for text in (prompt, negative))
        torch.testing.assert_close(u[k], uncond + g * (cond - uncond), rtol=1e-5, atol=1e-5)

    with pytest.warns(UserWarning, match="step-distilled"):
        encoded = klein.encode_conditions([Condition("a cat", guidance=4.0), Condition("a dog", negative_prompt="a tree")])
    with CallCounter(klein.pipe.transformer) as calls:
        u = klein.predict(x, sigma, encoded)
    assert calls.batches == [2 * 2]
    torch.testing.assert_close(u[1], _pipeline_velocity(klein.pipe, x[1], sigma, "a dog"), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="true_cfg"):
        klein.encode_conditions([Condition("a cat", true_cfg=2.0, negative_prompt="a dog")])


def test_empirical_mu_is_the_pipelines():
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    for tokens, steps in [(6, 4), (1024, 28), (4096, 50), (5000, 8)]:
        assert empirical_mu(tokens, steps) == pytest.approx(compute_empirical_mu(tokens, steps), rel=1e-12)


@pytest.mark.parametrize("which", ["flux2", "klein"])
@pytest.mark.parametrize("n_steps", [1, 4, 28])
def test_sigmas_are_the_pipelines(request, which, n_steps):
    backbone = request.getfixturevalue(which)
    sigmas = backbone.schedule.grid(n_steps, LATENT).times
    assert sigmas.dtype == torch.float64 and sigmas[-1] == 0 and torch.all(sigmas[1:] < sigmas[:-1])
    pipe = quiet_copy(backbone.pipe)
    pipe(prompt="a cat", height=32, width=48, num_inference_steps=n_steps, output_type="latent", max_sequence_length=TEXT_LENGTH)
    torch.testing.assert_close(sigmas.float(), pipe.scheduler.sigmas, rtol=1e-6, atol=1e-7)


def test_dev_generation_matches_the_pipelines_own_loop(flux2):
    n_steps = 4
    x_T = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(5))
    ours, _ = generate(flux2, x_T, Condition("a photo of a cat", guidance=3.0), n_steps)
    tokens = pipeline_latents(
        flux2.pipe, x_T, "a photo of a cat", n_steps, 32, 48, guidance_scale=3.0, max_sequence_length=TEXT_LENGTH
    )  # packed tokens (B, h w, 4C)
    reference = tokens.permute(0, 2, 1).reshape(x_T.shape)
    assert relative_error(ours, reference) < 1e-5, relative_error(ours, reference)


@pytest.mark.parametrize("which, guidance", [("klein", 1.0), ("klein_base", 4.0)])
def test_klein_generation_matches_the_pipelines_own_loop(request, which, guidance):
    """Klein's ``output_type="latent"`` is the de-normalised, unpatchified VAE latent: compare in that space."""
    backbone = request.getfixturevalue(which)
    n_steps = 4
    x_T = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(6))
    ours, _ = generate(backbone, x_T, Condition("a photo of a cat", guidance=guidance), n_steps)
    reference = pipeline_latents(
        backbone.pipe, x_T, "a photo of a cat", n_steps, 32, 48, guidance_scale=guidance, max_sequence_length=TEXT_LENGTH
    )
    mean, std = backbone._batch_norm(ours.device)
    ours_z = unpatchify(ours * std + mean)
    assert relative_error(ours_z, reference) < 1e-5, relative_error(ours_z, reference)


def test_vae_normalisation_and_round_trip(flux2, small_images):
    latents = flux2.encode_images(small_images, torch.Generator().manual_seed(1))
    assert latents.shape == (2, *LATENT) and latents.dtype == torch.float32
    vae = flux2.pipe.vae
    z = vae.encode(small_images).latent_dist.sample(torch.Generator().manual_seed(1))
    expected = (flux2.pipe._patchify_latents(z) - vae.bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps
    )
    torch.testing.assert_close(latents, expected)
    decoded = flux2.decode_latents(latents)
    assert decoded.shape == small_images.shape
    torch.testing.assert_close(decoded, vae.decode(z).sample.clamp(-1, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["flux2", "klein"])
def test_same_prompt_gives_the_vae_round_trip(request, which, small_images):
    assert_same_prompt_round_trip(request.getfixturevalue(which), small_images, "a red car", n_steps=4, start=1)


def test_distilled_klein_sync_sde_reconstructs_where_inversion_does_not(klein, small_images):
    """On the distilled 4-step schedule, source == target: sync-SDE returns the source exactly (no inversion);
    ODE inversion (Euler, 4 steps up and down) does not -- its error is measured here, not assumed."""
    x0 = klein.encode_images(small_images, torch.Generator().manual_seed(2))
    sync = edit_latents(klein, x0, "sync-sde", "a red car", "a red car", n_steps=4, start=1, seed=0)
    inverted = edit_latents(klein, x0, "ode-inversion", "a red car", "a red car", n_steps=4, start=1)
    assert torch.equal(sync.latents, x0)
    assert (sync.model_calls, inverted.model_calls) == (3, 3 + 3)  # one batched [source, target] call per step
    assert relative_error(inverted.latents, x0) > 1e-3


def test_bf16_model_float32_state(small_images):
    conditions = [Condition("a cat"), Condition("a dog", guidance=2.0, negative_prompt="a cat", true_cfg=2.0)]
    assert_bf16_model_float32_state(
        lambda: tiny_flux2_pipeline(seed=0),
        lambda pipe: Flux2Backbone(pipe, max_sequence_length=TEXT_LENGTH),
        conditions,
        _state(2, 1),
        0.6,
        small_images,
    )


@pytest.mark.parametrize("which", ["dev", "klein"])
def test_runs_with_model_cpu_offload(which, small_images):
    if which == "dev":
        make_pipe, cls = (lambda: tiny_flux2_pipeline(seed=0)), Flux2Backbone
    else:
        make_pipe, cls = (lambda: tiny_flux2_klein_pipeline(seed=0)), Flux2KleinBackbone
    assert_runs_with_cpu_offload(
        make_pipe, lambda pipe: cls(pipe, max_sequence_length=TEXT_LENGTH), small_images, "a cat", "a dog", n_steps=3, start=1
    )


@pytest.mark.parametrize("which", ["dev", "klein"])
def test_from_pretrained_loads_a_saved_pipeline(which, tmp_path):
    pipe = tiny_flux2_pipeline(seed=3) if which == "dev" else tiny_flux2_klein_pipeline(seed=3)
    cls = Flux2Backbone if which == "dev" else Flux2KleinBackbone
    assert_from_pretrained_matches(cls, pipe, tmp_path, _state(1, 1), 0.5, max_sequence_length=TEXT_LENGTH)


def test_edit_image_from_a_saved_klein_folder_uses_its_registered_defaults(tmp_path):
    """The image API loads a saved Klein pipeline through the registry and edits with its 4-step defaults."""
    from PIL import Image

    from coupled_sde.editing.api import edit_image

    folder = tmp_path / "klein"
    tiny_flux2_klein_pipeline(seed=4).save_pretrained(folder)
    data = torch.randint(0, 256, (32, 48, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(data.numpy()).save(tmp_path / "in.png")
    edited = edit_image(
        folder, tmp_path / "in.png", "a photo of a cat", "a photo of a dog", seed=1, device="cpu", dtype="float32"
    )
    info = edited.info["coupled_sde"]
    assert edited.size == (48, 32)
    assert (info["settings"]["steps"], info["settings"]["start"], info["model_calls"]) == (4, 1, 3)
