"""sync-SDE and the baselines on a tiny random FLUX pipeline: parity with the reference loop."""

import torch
from reference_flux_sync_sde import reference_flux_sync_sde  # tests/diffusers is on sys.path (rootdir import mode)

from coupled_sde.backends.base import Condition
from coupled_sde.brownian import GridBrownian
from coupled_sde.editing import edit_images, flowedit, sync_sde


def _latents(flux, images):
    return flux.encode_images(images, [torch.Generator().manual_seed(i) for i in range(images.shape[0])])


def test_sync_sde_matches_the_reference_loop(flux, flux_pipe, images):
    x0 = _latents(flux, images)
    n, i0 = 8, 2
    ours = sync_sde(flux, x0, "a photo of a cat", "a photo of a dog", n_steps=n, start=i0, noise=[3, 4][: x0.shape[0]])
    grid = flux.schedule.grid(n, x0.shape[1:]).sub(i0)
    xi = GridBrownian(grid, x0.shape[0], tuple(x0.shape[1:]), seed=[3, 4][: x0.shape[0]]).normals(0, n - i0)[0].transpose(0, 1)
    ref = reference_flux_sync_sde(
        flux_pipe, x0, "a photo of a cat", "a photo of a dog", n, i0, xi, max_sequence_length=flux.max_sequence_length
    )
    assert ours.model_calls == n - i0 and ours.model_evaluations == 2 * (n - i0)
    scale = ref.abs().max()
    assert (ours.latents - ref).abs().max() <= 2e-5 * scale, float((ours.latents - ref).abs().max())


def test_same_prompt_decodes_to_the_vae_round_trip(flux, images):
    res = edit_images(flux, images, "sync-sde", "a red car", "a red car", n_steps=6, start=1, seed=9)
    x0 = flux.encode_images(images, _gens(9, images.shape[0]))
    assert torch.equal(res.latents, x0)
    assert torch.equal(res.images, flux.decode_latents(x0))


def _gens(seed, b):
    from coupled_sde.editing.api import _generators

    return _generators(seed, b)


def test_same_seed_same_image_and_per_sample_seeds(flux, images):
    a = edit_images(flux, images, "sync-sde", "a cat", "a dog", n_steps=4, start=1, seed=[1, 2][: images.shape[0]])
    b = edit_images(flux, images, "sync-sde", "a cat", "a dog", n_steps=4, start=1, seed=[1, 2][: images.shape[0]])
    assert torch.equal(a.images, b.images)
    if images.shape[0] > 1:
        single = edit_images(flux, images[1:2], "sync-sde", "a cat", "a dog", n_steps=4, start=1, seed=[2])
        assert torch.allclose(single.images[0], a.images[1], atol=1e-5)


def test_flowedit_and_true_cfg_run_batched(flux, images):
    x0 = _latents(flux, images)
    out = flowedit(flux, x0, "a cat", "a dog", n_steps=6, n_max=4)
    assert out.latents.shape == x0.shape and torch.isfinite(out.latents).all()
    tgt = Condition("a room", true_cfg=2.0, negative_prompt="a lamp")
    res = sync_sde(flux, x0, "a room with a lamp", tgt, n_steps=5, start=1)
    assert torch.isfinite(res.latents).all()
