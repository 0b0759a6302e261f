"""Brownian interval queries: coupled_sde.BrownianTree vs torchsde's BrownianInterval and BrownianTree.

Two query patterns on [0, 1], the same for every source: a sequential grid (the increments of n uniform
steps, as a fixed-step solve asks) and random intervals (as adaptive stepping with rejections asks).
Each timed run builds a fresh source (cold caches). Ours and torchsde's tree use the same ``--tol``
(torchsde's BrownianInterval has none); one extra row shows ours at a coarser tolerance (cost is one
bisection per halving of the leaf size). Rows are interleaved round-robin and the medians are
printed with their ratio to torchsde's BrownianInterval, all from one run.

    python benchmarks/bench_brownian_tree.py [--batch 1024] [--dim 2] [--steps 1000] [--random 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from coupled_sde.brownian_tree import BrownianTree


def sequential(n: int) -> list[tuple[float, float]]:
    return [(i / n, (i + 1) / n) for i in range(n)]


def random_queries(n: int, seed: int = 0) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = sorted((rng.random(), rng.random()))
        out.append((a, b))
    return out


def run_ours(queries, batch, dim, tol, levy):
    bm = BrownianTree(0.0, 1.0, batch, (dim,), seed=0, tol=tol, levy_area=levy)
    if levy:
        for a, b in queries:
            bm.space_time_levy_area(a, b)
    else:
        for a, b in queries:
            bm.increment(a, b)


def run_torchsde(queries, batch, dim, tol, kind):
    import torchsde

    if kind == "interval":
        bm = torchsde.BrownianInterval(0.0, 1.0, (batch, dim), entropy=0)
    else:
        bm = torchsde.BrownianTree(0.0, torch.zeros(batch, dim), t1=1.0, tol=tol, entropy=0)
    for a, b in queries:
        bm(a, b) if kind == "interval" else (bm(b) - bm(a))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--random", type=int, default=200)
    p.add_argument("--tol", type=float, default=2.0**-20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    B, D, tol = args.batch, args.dim, args.tol
    patterns = {
        f"sequential grid ({args.steps} steps)": sequential(args.steps),
        f"random intervals ({args.random})": random_queries(args.random),
    }
    print(f"batch {B}, noise ({D},), tol {tol:.3g}, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    for label, queries in patterns.items():
        rows = {
            "torchsde BrownianInterval": lambda q=queries: run_torchsde(q, B, D, tol, "interval"),
            "torchsde BrownianTree": lambda q=queries: run_torchsde(q, B, D, tol, "tree"),
            "coupled_sde BrownianTree": lambda q=queries: run_ours(q, B, D, tol, False),
            "coupled_sde BrownianTree, Levy area": lambda q=queries: run_ours(q, B, D, tol, True),
            "coupled_sde BrownianTree, Levy area, tol 2**-14": lambda q=queries: run_ours(q, B, D, 2.0**-14, True),
        }
        times: dict[str, list[float]] = {k: [] for k in rows}
        for _ in range(args.repeats):
            for k, fn in rows.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["torchsde BrownianInterval"]
        print(f"{label}:")
        for k, t in med.items():
            print(
                f"  {k:<40} {t * 1e3:9.1f} ms  {t / base:6.2f}x torchsde BrownianInterval  ({t / len(queries) * 1e6:8.1f} us/query)"
            )


if __name__ == "__main__":
    main()
