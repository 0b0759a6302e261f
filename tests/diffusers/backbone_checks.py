"""Checks every diffusers backbone must pass, written once and called from each backbone's test file.

(Imported by name: ``tests/diffusers`` is on ``sys.path`` in pytest's rootdir import mode.)
"""

from __future__ import annotations

import copy
import time

import torch

from coupled_sde.backends.base import Condition
from coupled_sde.editing import edit_images
from coupled_sde.editing.api import _generators
from coupled_sde.editing.members import Members, editing_integrator
from coupled_sde.solve import solve


class CallCounter:
    """Forward hook recording the batch size of every call of a module (the first tensor input)."""

    def __init__(self, module: torch.nn.Module, key: str = "hidden_states"):
        self.batches: list[int] = []
        self.key = key
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        first = kwargs.get(self.key, args[0] if args else None)
        self.batches.append(int(first.shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def quiet_copy(pipe):
    """A shallow copy of a pipeline with its own scheduler (the pipeline call mutates it), no progress bar."""
    clone = copy.copy(pipe)
    clone.scheduler = copy.deepcopy(pipe.scheduler)
    clone.set_progress_bar_config(disable=True)
    return clone


def generate(backbone, x_T: torch.Tensor, condition: Condition, n_steps: int) -> tuple[torch.Tensor, float]:
    """Plain generation with the library's loop from ``x_T`` ``(B, *latent)``: the members system at
    ``eta = 0`` on the backbone's own grid, with Euler for rectified flow (the probability-flow ODE
    ``dx/dsigma = u``) and the DDIM step for discrete VP. Returns the latent and the solve's seconds."""
    grid = backbone.schedule.grid(n_steps, tuple(x_T.shape[1:]))
    integrator = editing_integrator("euler" if backbone.schedule.continuous else "ddim", backbone.schedule, eta=0.0)
    start = time.perf_counter()
    system = Members(backbone, backbone.encode_conditions([condition]), 1, eta=0.0, integrator=integrator)
    out = solve(system, x_T.unsqueeze(0), grid, integrator).y[0]
    return out, time.perf_counter() - start


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def assert_same_prompt_round_trip(backbone, images: torch.Tensor, prompt: str, **settings) -> None:
    """sync-SDE with source == target returns the source latent bit for bit, so the decoded image is
    exactly the VAE round trip of the source."""
    result = edit_images(backbone, images, "sync-sde", prompt, prompt, seed=5, **settings)
    source = backbone.encode_images(images, _generators(5, images.shape[0]))
    assert torch.equal(result.latents, source)
    assert torch.equal(result.images, backbone.decode_latents(source))


def assert_runs_with_cpu_offload(make_pipe, make_backbone, images: torch.Tensor, prompt: str, target: str, **settings):
    """``enable_model_cpu_offload`` installs accelerate's hooks (here onloading to the CPU, the only
    device the tests have): encoding, the batched predictions and decoding go through them and give
    the same edit as without offloading."""
    plain = make_backbone(make_pipe())
    pipe = make_pipe()
    pipe.enable_model_cpu_offload(device="cpu")
    offloaded = make_backbone(pipe)
    hooked = [name for name, module in pipe.components.items() if hasattr(module, "_hf_hook")]
    assert hooked, "enable_model_cpu_offload installed no hooks"
    a = edit_images(plain, images, "sync-sde", prompt, target, seed=3, **settings)
    b = edit_images(offloaded, images, "sync-sde", prompt, target, seed=3, **settings)
    torch.testing.assert_close(b.latents, a.latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.images, a.images, rtol=1e-5, atol=1e-5)


def assert_bf16_model_float32_state(make_pipe, make_backbone, conditions, x: torch.Tensor, t, images: torch.Tensor) -> None:
    """A bf16 model behind a float32 state: predictions, latents and images stay float32, and the
    prediction is within bf16 error (5 %) of the float32 model's."""
    fp32 = make_backbone(make_pipe())
    bf16 = make_backbone(make_pipe().to(torch.bfloat16))
    u = bf16.predict(x, t, bf16.encode_conditions(conditions))
    assert u.dtype == torch.float32
    reference = fp32.predict(x, t, fp32.encode_conditions(conditions))
    assert (u - reference).norm() / reference.norm() < 0.05
    latents = bf16.encode_images(images, generator=torch.Generator().manual_seed(0))
    assert latents.dtype == torch.float32 and bf16.decode_latents(latents).dtype == torch.float32


def assert_from_pretrained_matches(cls, pipe, folder, x: torch.Tensor, t, **options):
    """``cls.from_pretrained`` of the saved ``pipe`` predicts as ``cls(pipe)``, and ``load_backbone`` finds
    ``cls`` by the folder's ``model_index.json``. Returns the loaded backbone."""
    from coupled_sde.editing.loading import load_backbone

    pipe.save_pretrained(folder)
    loaded = cls.from_pretrained(str(folder), torch_dtype=torch.float32, **options)
    assert type(load_backbone(folder, device="cpu", dtype="float32", quiet=True)) is cls
    built = cls(pipe, **options)
    u = loaded.predict(x, t, loaded.encode_conditions([Condition("a cat")]))
    torch.testing.assert_close(u, built.predict(x, t, built.encode_conditions([Condition("a cat")])))
    return loaded


def gradient_images(height: int, width: int, second) -> torch.Tensor:
    """Two smooth test images ``(2, 3, height, width)`` in [-1, 1] (``height <= width``): horizontal and
    vertical ramps, and ``second`` of them (``torch.sin(2 * x)``, ...)."""
    grid = torch.linspace(-1.0, 1.0, width)
    first = torch.stack(
        [grid[None, :].expand(height, width), grid[:height, None].expand(height, width), torch.zeros(height, width)]
    )
    return torch.stack([first, second(first)])


def pipeline_latents(pipe, latents: torch.Tensor, prompt: str, n_steps: int, height: int, width: int, **options) -> torch.Tensor:
    """The pipeline's own sampling loop from ``latents`` (one image per row) to ``output_type="latent"``, on a
    quiet copy of ``pipe`` (its scheduler is left as it was)."""
    return quiet_copy(pipe)(
        prompt=prompt,
        num_images_per_prompt=latents.shape[0],
        height=height,
        width=width,
        latents=latents,
        num_inference_steps=n_steps,
        output_type="latent",
        **options,
    ).images
