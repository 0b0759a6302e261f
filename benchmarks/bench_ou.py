"""2-D Ornstein–Uhlenbeck, batch 1024, 1000 Euler steps: coupled_sde.solve vs a hand-written loop vs torchsde.

Prints the median of several repeats for each and the ratios to the hand-written loop, all measured
in the same run (so the ratios, not the absolute times, are what to compare across machines).
Times an integer seed and per-sample seeds (one per path), and K = 2 synchronously coupled members against a hand loop that shares its draws.

    python benchmarks/bench_ou.py [--repeats 7] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from coupled_sde import GridBrownian, TimeGrid, solve
from coupled_sde.problems import OrnsteinUhlenbeck

THETA, MU, SIGMA = 1.0, 0.5, 0.3
B, D, N = 1024, 2, 1000


def hand_loop(x0: torch.Tensor) -> torch.Tensor:
    x, dt = x0.clone(), 1.0 / N
    for _ in range(N):
        x = x + THETA * (MU - x) * dt + SIGMA * math.sqrt(dt) * torch.randn(B, D)
    return x


def hand_loop_coupled(x0: torch.Tensor) -> torch.Tensor:
    x, dt = x0.clone(), 1.0 / N  # (2, B, D), one draw shared by both members
    for _ in range(N):
        x = x + THETA * (MU - x) * dt + SIGMA * math.sqrt(dt) * torch.randn(B, D)
    return x


def ours(x0: torch.Tensor, grid: TimeGrid) -> torch.Tensor:
    return solve(OrnsteinUhlenbeck(THETA, MU, SIGMA), x0, grid, "euler", noise=0).y


def ours_per_sample(x0: torch.Tensor, grid: TimeGrid, seeds: list[int]) -> torch.Tensor:
    return solve(OrnsteinUhlenbeck(THETA, MU, SIGMA), x0, grid, "euler", noise=seeds).y


def ours_legacy(x0: torch.Tensor, grid: TimeGrid, seed) -> torch.Tensor:
    """The same solve on coupled-sde 0.1's generator (seeded CPU torch.randn), for comparison."""
    src = GridBrownian(grid, None if isinstance(seed, list) else B, (D,), seed=seed, generator="torch")
    return solve(OrnsteinUhlenbeck(THETA, MU, SIGMA), x0, grid, "euler", noise=src).y


def ours_coupled(x0: torch.Tensor, grid: TimeGrid) -> torch.Tensor:
    return solve(OrnsteinUhlenbeck(THETA, MU, SIGMA), x0, grid, "euler", noise=0, coupling="synchronous").y


def torchsde_euler(x0: torch.Tensor, dt_hint: bool) -> torch.Tensor:
    import torchsde

    class OU(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return THETA * (MU - y)

        def g(self, t, y):
            return torch.full_like(y, SIGMA)

    ts = torch.tensor([0.0, 1.0])
    kw = {}
    if dt_hint:
        kw["bm"] = torchsde.BrownianInterval(0.0, 1.0, (B, D), dt=1.0 / N)
    return torchsde.sdeint(OU(), x0, ts, method="euler", dt=1.0 / N, **kw)[-1]


def median_times(rows: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each row, the rows interleaved round-robin so that a change in the machine's
    load (a shared CI runner) hits all of them alike and the ratios stay meaningful."""
    for fn in rows.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, fn in rows.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-torchsde", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = TimeGrid.uniform(0.0, 1.0, N)
    x0 = torch.zeros(B, D)
    x0k = torch.stack([x0, x0 + 1.0])
    seeds = list(range(1000, 1000 + B))
    rows = {
        "hand-written loop": lambda: hand_loop(x0),
        "coupled_sde.solve": lambda: ours(x0, grid),
        "coupled_sde.solve, per-sample seeds": lambda: ours_per_sample(x0, grid, seeds),
        "coupled_sde.solve, generator='torch' (0.1)": lambda: ours_legacy(x0, grid, 0),
        "coupled_sde.solve, per-sample, generator='torch' (0.1)": lambda: ours_legacy(x0, grid, seeds),
        "hand loop, K=2 shared draws": lambda: hand_loop_coupled(x0k),
        "coupled_sde.solve, K=2 synchronous": lambda: ours_coupled(x0k, grid),
    }
    if not args.no_torchsde:
        rows["torchsde.sdeint euler (BrownianInterval)"] = lambda: torchsde_euler(x0, False)
        rows["torchsde.sdeint euler (BrownianInterval, dt hint)"] = lambda: torchsde_euler(x0, True)
    times = median_times(rows, args.repeats)
    base, base_k = times["hand-written loop"], times["hand loop, K=2 shared draws"]
    print(f"2-D OU, batch {B}, {N} Euler steps, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    for name, t in times.items():
        ref = base_k if "K=2" in name else base
        print(f"  {name:<52} {t * 1e3:9.1f} ms   {t / ref:6.2f}x hand loop")


if __name__ == "__main__":
    main()
