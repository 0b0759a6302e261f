"""Every diffusers backbone against its own pipeline, on the tiny random pipelines (CPU, one thread).

For SD3, SDXL (epsilon and v), FLUX.2 dev, FLUX.2 Klein (distilled and base) and Qwen-Image: plain
generation with the library's loop (the probability-flow ODE / DDIM chain solved by Euler on the
backbone's schedule, one batched call per step) against ``pipe(..., latents=x_T, output_type="latent")``
from the same initial noise -- the maximum absolute difference relative to the pipeline's output --
and the seconds of each (median of ``--repeats``; prompt encoding included in both).

Then the measurement the FLUX.2 Klein (step-distilled, 4-step) schedule asks for: with source ==
target, sync-SDE returns the source exactly (no inversion), while ODE inversion (Euler up to
``sigma_start`` and back) does not; its reconstruction error at several step counts, and the model
calls of each. On random tiny weights these are numerics of the schedule and the integrator, not
image quality.

    python benchmarks/backbone_parity.py [--steps 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from coupled_sde.backends.base import Condition
from coupled_sde.editing import edit_latents
from coupled_sde.editing.members import Members, editing_integrator
from coupled_sde.solve import solve


def _cases():
    """``(name, backbone, guidance, extra pipeline kwargs, what the pipeline's "latent" output is)``."""
    from coupled_sde.backends.hf import flux2, qwen_image, sd3, sdxl, tiny_backbones

    text = dict(max_sequence_length=24)
    sd3_backbone = sd3.StableDiffusion3Backbone(tiny_backbones.tiny_sd3_pipeline(0), max_sequence_length=16)
    yield "SD3", sd3_backbone, 4.5, {"max_sequence_length": 16}, "state"
    yield "SDXL (eps)", sdxl.StableDiffusionXLBackbone(tiny_backbones.tiny_sdxl_pipeline(0)), 5.0, {}, "state"
    yield "SDXL (v)", sdxl.StableDiffusionXLBackbone(tiny_backbones.tiny_sdxl_pipeline(1, "v_prediction")), 5.0, {}, "state"
    yield "FLUX.2 dev", flux2.Flux2Backbone(tiny_backbones.tiny_flux2_pipeline(0), **text), 3.0, text, "tokens"
    for name, distilled, guidance in (("FLUX.2 Klein (distilled)", True, 1.0), ("FLUX.2 Klein (base)", False, 4.0)):
        backbone = flux2.Flux2KleinBackbone(tiny_backbones.tiny_flux2_klein_pipeline(0, distilled), **text)
        yield name, backbone, guidance, text, "vae latent"
    qwen = qwen_image.QwenImageBackbone(tiny_backbones.tiny_qwen_image_pipeline(0), max_sequence_length=64)
    yield "Qwen-Image", qwen, 4.0, {"max_sequence_length": 64, "negative_prompt": " "}, "qwen tokens"


def _ours(backbone, x_T, guidance, n_steps, negative):
    condition = Condition("a photo of a cat", guidance=guidance, negative_prompt=negative)
    schedule = backbone.schedule
    grid = schedule.grid(n_steps, tuple(x_T.shape[1:]))
    integrator = editing_integrator("euler" if schedule.continuous else "ddim", schedule, eta=0.0)
    system = Members(backbone, backbone.encode_conditions([condition]), 1, eta=0.0, integrator=integrator)
    return solve(system, x_T.unsqueeze(0), grid, integrator).y[0]


def _pipeline(backbone, x_T, guidance, n_steps, extra, output):
    """The pipeline's own generation from ``x_T``, converted to the backbone's state."""
    from coupled_sde.backends.hf.flux import pack_latents, unpack_latents
    from coupled_sde.backends.hf.flux2 import patchify

    pipe = copy.copy(backbone.pipe)
    pipe.scheduler = copy.deepcopy(backbone.pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    height, width = backbone.image_multiple * 2, backbone.image_multiple * 3
    kwargs = dict(prompt="a photo of a cat", num_images_per_prompt=x_T.shape[0], height=height, width=width)
    kwargs.update(num_inference_steps=n_steps, output_type="latent", **extra)
    if output == "qwen tokens":
        kwargs.update(latents=pack_latents(x_T), true_cfg_scale=guidance)
        return unpack_latents(pipe(**kwargs).images, x_T.shape[-2], x_T.shape[-1])
    out = pipe(latents=x_T, guidance_scale=guidance, **kwargs).images
    if output == "tokens":  # FLUX.2 dev: packed tokens (B, h w, 4C)
        return out.permute(0, 2, 1).reshape(x_T.shape)
    if output == "vae latent":  # Klein: the de-normalised, unpatchified VAE latent
        mean, std = backbone._batch_norm(out.device)
        return (patchify(out) - mean) / std
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    klein = None
    print(f"plain generation, {args.steps} steps, batch 2, image 2x3 multiples of the backbone's size unit")
    print(f"{'backbone':26s} {'max |ours - pipe| / max |pipe|':>32s} {'ours s':>8s} {'pipe s':>8s}")
    for name, backbone, guidance, extra, output in _cases():
        shape = backbone.latent_shape(backbone.image_multiple * 2, backbone.image_multiple * 3)
        x_T = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
        negative = extra.get("negative_prompt")
        extra = {k: v for k, v in extra.items() if not (output == "qwen tokens" and k == "negative_prompt" and guidance <= 1)}
        times_ours, times_pipe = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = _ours(backbone, x_T, guidance, args.steps, negative)
            times_ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            ref = _pipeline(backbone, x_T, guidance, args.steps, extra, output)
            times_pipe.append(time.perf_counter() - start)
        error = float((ours - ref).abs().max() / ref.abs().max())
        print(f"{name:26s} {error:32.2e} {statistics.median(times_ours):8.3f} {statistics.median(times_pipe):8.3f}")
        if name == "FLUX.2 Klein (distilled)":
            klein = backbone

    print("\nFLUX.2 Klein (distilled), source == target, start index 1, batch 2 (32x48)")
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x0 = klein.encode_images(images, [torch.Generator().manual_seed(s) for s in (2, 3)])
    print(f"{'steps':>5s} {'method':>14s} {'max |out - x0| / max |x0|':>27s} {'model calls':>12s} {'evaluations':>12s}")
    for n_steps in (4, 8, 28):
        for method in ("sync-sde", "ode-inversion"):
            settings = dict(n_steps=n_steps, start=1) | ({"seed": 0} if method == "sync-sde" else {})
            out = edit_latents(klein, x0, method, "a red car", "a red car", **settings)
            error = float((out.latents - x0).abs().max() / x0.abs().max())
            print(f"{n_steps:5d} {method:>14s} {error:27.2e} {out.model_calls:12d} {out.model_evaluations:12d}")


if __name__ == "__main__":
    main()
