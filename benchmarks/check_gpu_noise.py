"""Check that the counter-based noise is the same on a GPU as on the CPU, and time it at scale.

For the same seeds: the generator's 64-bit words must be *bit-identical* on both devices; the normals
(float transform through the device's log/cos/sin) must agree to a few ulp; GridBrownian and
BrownianTree increments likewise. Then times GridBrownian normals for 10**6 paths x 1000 steps x 2 on the
GPU against ``torch.randn`` of the same size. Exits non-zero on a mismatch.

    python benchmarks/check_gpu_noise.py [--device cuda] [--paths 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from coupled_sde import BrownianTree, GridBrownian, TimeGrid
from coupled_sde.brownian import grid_keys
from coupled_sde.counter_rng import counter_bits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--paths", type=int, default=1_000_000)
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    dev = torch.device(args.device)
    ok = True
    seeds = [0, 1, 2**63 + 5, 2**64 - 1, 123456789]
    for seed in (7, seeds):
        kc = grid_keys(7, None, 5, 2, "cpu") if seed == 7 else grid_keys(None, seed, 5, 2, "cpu")
        kd = grid_keys(7, None, 5, 2, dev) if seed == 7 else grid_keys(None, seed, 5, 2, dev)
        idx = torch.arange(0, 4096, dtype=torch.int64)
        same = torch.equal(counter_bits(*kc, idx), counter_bits(*kd, idx.to(dev)).cpu())
        print(f"seed {seed!r:>40}: 64-bit words identical on cpu and {dev}: {same}")
        ok &= same
    g = TimeGrid.uniform(0.0, 1.0, 200)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        a = GridBrownian(g, None, (3, 4), seed=seeds, dtype=dtype).normals(0, 200)
        b = GridBrownian(g, None, (3, 4), seed=seeds, dtype=dtype, device=dev).normals(0, 200).cpu()
        d = float((a - b).abs().max())
        print(f"GridBrownian normals {dtype}: max |cpu - {dev}| = {d:.3g} (bitwise equal: {torch.equal(a, b)})")
        ok &= d <= tol * 10
        ta = BrownianTree(0.0, 1.0, None, (3,), seed=seeds, levy_area=True, tol=1e-5, dtype=dtype)
        tb = BrownianTree(0.0, 1.0, None, (3,), seed=seeds, levy_area=True, tol=1e-5, dtype=dtype, device=dev)
        for s, t in ((0.0, 1.0), (0.123, 0.456), (0.5, 0.5001)):
            (wa, ha), (wb, hb) = ta.space_time_levy_area(s, t), tb.space_time_levy_area(s, t)
            d = max(float((wa - wb.cpu()).abs().max()), float((ha - hb.cpu()).abs().max()))
            print(f"  BrownianTree {dtype} [{s}, {t}]: max |cpu - {dev}| = {d:.3g}")
            ok &= d <= 1e-5
    # scale: 10**6 paths
    B, n = args.paths, 1000
    big = TimeGrid.uniform(0.0, 1.0, n)
    src = GridBrownian(big, None, (2,), seed=torch.arange(B), device=dev)
    chunk = src.chunk_steps()

    def ours():
        for i in range(0, n, chunk):
            src.normals(i, min(n, i + chunk))

    def randn():
        for i in range(0, n, chunk):
            torch.randn((1, B, min(n, i + chunk) - i, 2), device=dev)

    for name, fn in (("GridBrownian per-sample seeds", ours), ("torch.randn", randn)):
        fn()
        torch.cuda.synchronize(dev) if dev.type == "cuda" else None
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize(dev) if dev.type == "cuda" else None
        print(f"{name:<32} {B} paths x {n} steps x 2: {(time.perf_counter() - t) * 1e3:8.1f} ms")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
