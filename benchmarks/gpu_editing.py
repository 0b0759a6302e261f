"""Seconds per edit and peak memory of the editing methods on full-size FLUX.1-dev and SD3.5 Large.

The transformers are built from their published configurations with random weights in bf16 (the
weights do not change the cost), at 1024 x 1024 (128 x 128 latents), with the reference step counts:

* sync-SDE, 28 steps from i0 = 4 (FLUX) / 50 steps from 17 (SD3.5, FlowEdit's n_max = 33 window):
  both members in one batched call per step ("fused"), and the reference's two calls per step;
* FlowEdit, 28 steps, n_max = 24 (FLUX) / 50 steps, n_max = 33 (SD3.5);
* RF-Inversion, 28 + 28 steps (FLUX) / 50 + 50 (SD3.5);
* FireFlow with its feature sharing (FLUX only), 8 + 8 steps from pure noise, values shared in the
  first editing step: 18 calls, and the peak memory shows what the attention-value store holds.

SD3.5 uses true classifier-free guidance, so every member costs two rows of the batch. Text encoders
and the VAE are left out: the conditions are random embeddings of the real shapes (T5 512 tokens for
FLUX; 77 + 256 for SD3.5) made once per edit, so what is timed is the editing loop, the same for
every method. Each method runs once to warm up, then ``--repeats`` times; the peak is
``torch.cuda.max_memory_allocated`` over the timed edits. ``--offload`` repeats the timing with the
transformer behind accelerate's model offload hook (what ``enable_model_cpu_offload`` installs), offloaded
before each edit as a pipeline does when its text encoders run, so the transfer counts.

    python benchmarks/gpu_editing.py [--models flux sd3] [--offload] [--out benchmarks/results/gpu_editing.csv]
    python benchmarks/gpu_editing.py --tiny      # the same code at toy size on the CPU (tested)

Budget: about 5 minutes on one H100/H200 with ``--offload`` (model construction included).
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coupled_sde.backends.base import Condition
from coupled_sde.backends.hf.flux import FluxBackbone, FluxConditions
from coupled_sde.editing import flowedit, ode_inversion, sync_sde
from coupled_sde.editing.rf_inversion import rf_inversion
from coupled_sde.editing.value_sharing import can_share_values
from coupled_sde.schedules import RectifiedFlow

FLUX_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)  # fmt: skip
SD35_LARGE = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64, num_attention_heads=38,
    joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048, out_channels=16,
    pos_embed_max_size=192, qk_norm="rms_norm",
)  # fmt: skip
TINY_FLUX = dict(FLUX_DEV, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                 joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))  # fmt: skip
TINY_SD3 = dict(SD35_LARGE, sample_size=8, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16)  # fmt: skip
COLUMNS = ("model", "method", "offload", "steps", "model_calls", "transformer_calls", "seconds_per_edit", "peak_gib", "latent")


def _build(cls: Any, config: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """A transformer from its config with seeded random weights, initialised directly in ``dtype`` on ``device``."""
    previous = torch.get_default_dtype()
    torch.manual_seed(seed)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = cls(**config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).eval().requires_grad_(False)


class CountingTransformer(torch.nn.Module):
    """Counts forward passes of the wrapped transformer (the "two calls" variant makes two per stage)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


class TimingFlux(FluxBackbone):
    """FLUX.1-dev with random text embeddings of the real shapes instead of the text encoders."""

    def __init__(self, pipe: Any, seq_len: int, device: torch.device) -> None:
        super().__init__(pipe, max_sequence_length=seq_len)
        self.seq_len, self.device = seq_len, device

    def encode_conditions(self, conditions: list[Condition]) -> FluxConditions:
        tr, n = self.pipe.transformer, len(conditions)
        device, dtype = self.device, tr.dtype
        g = torch.Generator(device="cpu").manual_seed(n)
        embeds = torch.randn(n, self.seq_len, tr.config.joint_attention_dim, generator=g).to(device, dtype)
        pooled = torch.randn(n, tr.config.pooled_projection_dim, generator=g).to(device, dtype)
        guidance = [3.5 if c.guidance is None else float(c.guidance) for c in conditions]
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return FluxConditions(
            embeds, pooled, torch.zeros(self.seq_len, 3, device=device, dtype=dtype), torch.arange(n, device=device),
            torch.tensor(guidance, device=device), empty, empty, torch.zeros(0, device=device), device,
        )  # fmt: skip


class TimingSD3:
    """SD3.5 as a flow backbone for timing: members and their CFG rows in one transformer call.

    Static shift 3.0 schedule, ``timestep = 1000 sigma``, output = velocity ``eps - x0`` (as
    ``StableDiffusion3Pipeline``); random embeddings of the real shapes (77 + 256 tokens).
    """

    prediction = "flow"

    def __init__(self, transformer: torch.nn.Module, device: torch.device, seq_len: int, cfg: float = 3.5) -> None:
        self.transformer, self.device, self.seq_len, self.cfg = transformer, device, seq_len, cfg
        self.schedule = RectifiedFlow(shift=3.0)


    def encode_conditions(self, conditions: list[Condition]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, n = self.transformer.config, 2 * len(conditions)  # conditional + negative row per member
        g = torch.Generator(device="cpu").manual_seed(n)
        dtype = self.transformer.dtype
        embeds = torch.randn(n, self.seq_len, cfg.joint_attention_dim, generator=g).to(self.device, dtype)
        pooled = torch.randn(n, cfg.pooled_projection_dim, generator=g).to(self.device, dtype)
        return embeds, pooled

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: float, encoded: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        members, batch = x.shape[:2]
        embeds, pooled = encoded
        rows = x.reshape(members * batch, *x.shape[2:])
        rows = torch.cat([rows, rows]).to(self.device, self.transformer.dtype)  # positive rows, then negative rows
        index = torch.cat([torch.arange(members).repeat_interleave(batch), members + torch.arange(members).repeat_interleave(batch)])
        index = index.to(embeds.device)
        out = self.transformer(
            hidden_states=rows,
            encoder_hidden_states=embeds[index],
            pooled_projections=pooled[index],
            timestep=torch.full((rows.shape[0],), 1000.0 * t, device=self.device, dtype=self.transformer.dtype),
            return_dict=False,
        )[0].float()
        pos, neg = out.chunk(2)
        return (neg + self.cfg * (pos - neg)).view(x.shape).to(x.device)


class SeparateCalls:
    """The reference's layout: one model call per member (the members of a stage are not batched)."""

    def __init__(self, backbone: Any) -> None:
        self.backbone, self.prediction, self.schedule = backbone, backbone.prediction, backbone.schedule

    def encode_conditions(self, conditions: list[Condition]) -> list[Any]:
        return [self.backbone.encode_conditions([c]) for c in conditions]

    def predict(self, x: torch.Tensor, t: float, encoded: list[Any]) -> torch.Tensor:
        return torch.cat([self.backbone.predict(x[k : k + 1], t, e) for k, e in enumerate(encoded)])


@dataclass
class Case:
    model: str
    backbone: Any
    transformer: CountingTransformer
    latent: tuple[int, int, int]
    steps: int
    start: int


def _methods(case: Case) -> dict[str, Callable[[Any, torch.Tensor], Any]]:
    n, start = case.steps, case.start
    src, tgt = "a photo of a cat", "a photo of a dog"
    methods = {
        "sync-sde fused": lambda b, x: sync_sde(b, x, src, tgt, n_steps=n, start=start, noise=0),
        "sync-sde two calls": lambda b, x: sync_sde(SeparateCalls(b), x, src, tgt, n_steps=n, start=start, noise=0),
        "flowedit": lambda b, x: flowedit(b, x, src, tgt, n_steps=n, n_max=n - start, noise=0),
        "rf-inversion": lambda b, x: rf_inversion(b, x, src, tgt, n_steps=n, start=0, noise=0),
    }
    if can_share_values(case.backbone):
        # FireFlow as published (8 + 8 steps from pure noise, feature sharing in the first): the store's memory shows
        fire = min(n, 8)
        methods["fireflow shared"] = lambda b, x: ode_inversion(
            b, x, src, tgt, n_steps=fire, start=0, integrator="fireflow", share_values=1
        )
    return methods


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(case: Case, device: torch.device, repeats: int, offload_hook: Any = None) -> list[dict[str, Any]]:
    rows = []
    x = torch.randn(1, *case.latent, generator=torch.Generator().manual_seed(0)).to(device)
    for name, edit in _methods(case).items():
        edit(case.backbone, x)  # warm-up (kernels, allocator, offload hooks)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, calls = [], 0
        for _ in range(repeats):
            if offload_hook is not None:
                offload_hook.offload()  # a pipeline's text encoders would have moved the transformer out
            case.transformer.calls = 0
            _sync(device)
            t0 = time.perf_counter()
            result = edit(case.backbone, x)
            _sync(device)
            seconds.append(time.perf_counter() - t0)
            calls = case.transformer.calls
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
        rows.append(
            dict(
                model=case.model, method=name, offload=offload_hook is not None, steps=case.steps,
                model_calls=result.model_calls, transformer_calls=calls, seconds_per_edit=sorted(seconds)[len(seconds) // 2],
                peak_gib=peak, latent="x".join(map(str, case.latent)),
            )
        )  # fmt: skip
        print(f"{case.model:<6} {name:<20} offload={offload_hook is not None!s:<5} {rows[-1]['seconds_per_edit']:8.2f} s/edit  "
              f"calls {result.model_calls:>3} (transformer {calls:>3})  peak {peak:6.1f} GiB", flush=True)  # fmt: skip
    return rows


def flux_case(tiny: bool, device: torch.device, dtype: torch.dtype) -> Case:
    from diffusers import FluxTransformer2DModel

    from coupled_sde.backends.hf import tiny_flux_pipeline

    pipe = tiny_flux_pipeline(seed=0)  # scheduler (FLUX.1-dev's dynamic shift) and VAE scale factor
    transformer = CountingTransformer(_build(FluxTransformer2DModel, TINY_FLUX if tiny else FLUX_DEV, device, dtype, 0))
    pipe.transformer = transformer
    backbone = TimingFlux(pipe, 16 if tiny else 512, device)
    side = 8 if tiny else 128
    return Case("flux", backbone, transformer, (16, side, side), 4 if tiny else 28, 1 if tiny else 4)


def sd3_case(tiny: bool, device: torch.device, dtype: torch.dtype) -> Case:
    from diffusers import SD3Transformer2DModel

    transformer = CountingTransformer(_build(SD3Transformer2DModel, TINY_SD3 if tiny else SD35_LARGE, device, dtype, 0))
    side = 8 if tiny else 128
    return Case("sd3.5", TimingSD3(transformer, device, 12 if tiny else 333), transformer, (16, side, side),
                4 if tiny else 50, 1 if tiny else 17)  # fmt: skip


def run(models: Sequence[str], tiny: bool, offload: bool, repeats: int, device: torch.device | None = None) -> list[dict[str, Any]]:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    rows: list[dict[str, Any]] = []
    for model in models:
        t0 = time.perf_counter()
        case = {"flux": flux_case, "sd3": sd3_case}[model](tiny, device, dtype)
        print(f"built {model} in {time.perf_counter() - t0:.1f} s", flush=True)
        with torch.inference_mode():
            rows += time_case(case, device, repeats)
            if offload:
                hook = None
                if device.type == "cuda":
                    from accelerate import cpu_offload_with_hook

                    _, hook = cpu_offload_with_hook(case.transformer, execution_device=device)
                else:  # on the CPU "offload" is a no-op move; the code path is still exercised
                    hook = _CPUHook()
                rows += time_case(case, device, repeats, hook)
        del case
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


class _CPUHook:
    def offload(self) -> None:
        pass


def save(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return p


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["flux", "sd3"], choices=["flux", "sd3"])
    parser.add_argument("--tiny", action="store_true", help="toy sizes and steps (CPU), to test the script")
    parser.add_argument("--offload", action="store_true", help="also time with the transformer behind a CPU offload hook")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/gpu_editing.csv")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("full-size models need a GPU; use --tiny to run the script on the CPU")
    rows = run(args.models, args.tiny, args.offload, args.repeats)
    print(f"wrote {save(rows, args.out)}")
    return rows


if __name__ == "__main__":
    main()
