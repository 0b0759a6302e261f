"""Cost of an edit on FLUX: sync-SDE with the fused batch-of-2 call vs two separate calls, and FlowEdit.

In one run, at the same resolution and step count, prints seconds per edit (median), model calls,
member evaluations, the share of time outside the model (solver + noise overhead) and, on CUDA, peak
memory. "Outside model" excludes prompt encoding (done once per edit): it is the solver's and the
noise's share. On a CPU it uses the tiny random FLUX pipeline; on a GPU, ``--full`` swaps in a full-size
FLUX.1-dev transformer (random weights: weights do not change the cost) in bf16 with random prompt
embeddings of the right shapes.

    python benchmarks/bench_editing.py                       # CPU, tiny model, 64x64
    python benchmarks/bench_editing.py --device cuda --full --size 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from coupled_sde.backends.wrappers import SeparateCalls, TimedCalls
from coupled_sde.editing import flowedit, sync_sde

FLUX_DEV = dict(  # FLUX.1-dev transformer config (diffusers' FluxTransformer2DModel)
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)


class RandomPrompts:
    """Encodes prompts as fixed random embeddings of the transformer's shapes (no text encoders)."""

    def __init__(self, backbone, seq_len: int = 512) -> None:
        self.backbone, self.seq_len, self.cache = backbone, seq_len, {}

    def __getattr__(self, name):
        return getattr(self.backbone, name)

    def encode_conditions(self, conditions):
        from coupled_sde.backends.hf.flux import FluxConditions

        tr = self.backbone.pipe.transformer
        dev, dtype = tr.device, tr.dtype
        prompts = [str(c.prompt) for c in conditions]
        unique = list(dict.fromkeys(prompts))
        g = torch.Generator().manual_seed(0)
        emb = torch.randn(len(unique), self.seq_len, tr.config.joint_attention_dim, generator=g).to(dev, dtype)
        pooled = torch.randn(len(unique), tr.config.pooled_projection_dim, generator=g).to(dev, dtype)
        return FluxConditions(
            prompt_embeds=emb,
            pooled_prompt_embeds=pooled,
            text_ids=torch.zeros(self.seq_len, 3, device=dev, dtype=dtype),
            prompt_rows=torch.tensor([unique.index(p) for p in prompts], device=dev),
            guidance=torch.tensor([1.0 if c.guidance is None else c.guidance for c in conditions], device=dev),
            cfg_members=torch.zeros(0, dtype=torch.long, device=dev),
            negative_rows=torch.zeros(0, dtype=torch.long, device=dev),
            true_cfg=torch.zeros(0, device=dev),
        )


def build(args):
    from coupled_sde.backends.hf import FluxBackbone, tiny_flux_pipeline

    pipe = tiny_flux_pipeline()
    if args.full:
        from diffusers import FluxTransformer2DModel

        with torch.device(args.device):
            pipe.transformer = FluxTransformer2DModel(**FLUX_DEV).to(torch.bfloat16)
        backbone = RandomPrompts(FluxBackbone(pipe), seq_len=512)
    else:
        pipe.to(args.device)
        backbone = FluxBackbone(pipe, max_sequence_length=32)
    return backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="full-size FLUX.1-dev transformer in bf16 (GPU)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--start", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = build(args)
    h = args.size // 8
    x0 = torch.randn(args.batch, 16, h, h, generator=torch.Generator().manual_seed(0)).to(args.device)
    src, tgt = "a photo of a cat", "a photo of a dog"
    cases = {
        "sync-SDE, fused batch-of-2 call": lambda b: sync_sde(b, x0, src, tgt, n_steps=args.steps, start=args.start, seed=0),
        "sync-SDE, two separate calls": lambda b: sync_sde(
            SeparateCalls(b), x0, src, tgt, n_steps=args.steps, start=args.start, seed=0
        ),
        "FlowEdit (n_max = steps - start), fused": lambda b: flowedit(
            b, x0, src, tgt, n_steps=args.steps, n_max=args.steps - args.start, seed=0
        ),
    }
    cuda = args.device.startswith("cuda")
    print(
        f"FLUX {'full-size bf16' if args.full else 'tiny float32'} on {args.device}, {args.size}x{args.size}, "
        f"batch {args.batch}, {args.steps} steps from index {args.start}, median of {args.repeats}"
    )
    print(f"  {'method':<42}{'s/edit':>10}{'calls':>7}{'evals':>7}{'solver+noise':>15}{'peak GiB':>10}")
    base = None
    for name, run in cases.items():
        times, overheads, peak = [], [], float("nan")
        run(backbone)  # warm-up
        for _ in range(args.repeats):
            timed = TimedCalls(backbone)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            res = run(timed)
            if cuda:
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() / 2**30
            total = time.perf_counter() - t0
            times.append(total / args.batch)
            overheads.append((total - timed.seconds - timed.encode_seconds) / total)  # solver + noise only
        t = statistics.median(times)
        base = base or t
        mem = f"{peak:>10.2f}" if cuda else f"{'-':>10}"
        print(
            f"  {name:<42}{t:>10.4f}{res.model_calls:>7}{res.model_evaluations:>7}{100 * statistics.median(overheads):>14.2f}%{mem}   ({t / base:.2f}x fused)"
        )


if __name__ == "__main__":
    main()
