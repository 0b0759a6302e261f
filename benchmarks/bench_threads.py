"""CPU threads for small models: a 24-step sync-SDE edit of a tiny FLUX pipeline at 1, 2, ... threads.

Why ``coupled-sde`` runs small models on one thread by default (``coupled_sde.commands._runtime``).
Each thread count runs in its own process (torch's thread pool is set once per process); the
median of 3 edits is printed, with the ratio to one thread::

    python benchmarks/bench_threads.py [--threads 1 2 0]   # 0 = torch's default
"""

from __future__ import annotations

import argparse
import subprocess
import sys

_EDIT = """
import sys, time, torch
n = int(sys.argv[1])
if n > 0:
    torch.set_num_threads(n)
from coupled_sde.backends.hf import FluxBackbone, tiny_flux_pipeline
from coupled_sde.editing.api import edit_tensor
backbone = FluxBackbone(tiny_flux_pipeline(seed=0))
x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
with torch.inference_mode():
    edit_tensor(backbone, x, "a cat", "a dog", steps=4, start=1)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        edit_tensor(backbone, x, "a cat", "a dog", steps=24, start=4, seed=0)
        times.append(time.perf_counter() - t0)
print(torch.get_num_threads(), sorted(times)[1])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 0], help="thread counts (0 = torch's default)")
    args = parser.parse_args()
    base = None
    for n in args.threads:
        out = subprocess.run([sys.executable, "-c", _EDIT, str(n)], capture_output=True, text=True, check=True).stdout.split()
        threads, seconds = int(out[-2]), float(out[-1])
        base = base or seconds
        label = "default" if n == 0 else str(n)
        print(f"threads {label:>7} ({threads}): {seconds:.3f} s per edit, {seconds / base:.1f}x one thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
