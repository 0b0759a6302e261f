"""Closed-form coupling study: editing Gaussian-mixture data with different couplings.

Source samples from class 0 are noised along their forward path; a target member conditioned on
class 1 runs the reverse SDE from the same noisy state, driven by the source path's backward
increments through a coupling (synchronous = sync-SDE, independent, reflection, correlated). The
saved paths show how far the target strays from the source over time; all couplings reach the
target class's law, only the synchronous one keeps samples close.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..backends.analytic import GaussianMixtureBackbone
from ..backends.base import Condition
from ..drivers import PathDriver
from ..editing.members import Members
from ..editing.sync_sde import forward_path
from ..grid import TimeGrid
from ..problems import GaussianMixture
from ..solve import solve
from .distance import member_distance

__all__ = ["two_class_mixture", "coupled_paths", "plot_coupled_paths"]


def two_class_mixture() -> GaussianMixture:
    return GaussianMixture(torch.tensor([[-2.0, -1.0], [2.0, 1.0]]), torch.tensor([0.6, 0.9]))


def coupled_paths(
    couplings: tuple[str | float, ...] = ("synchronous", "independent", "reflection"),
    n: int = 2000,
    n_steps: int = 50,
    start: int = 2,
    seed: int = 0,
) -> dict:
    """Run the study; returns the grid, the source samples and, per coupling, the saved paths
    ``(T, 2, n, 2)`` and the final target statistics."""
    gm = two_class_mixture()
    bb = GaussianMixtureBackbone(gm)
    x0, _ = gm.sample(n, torch.Generator().manual_seed(seed), component=0)
    grid = TimeGrid.rectified_flow(n_steps).sub(start)
    path = forward_path(x0, grid, seed)
    out = {"grid": grid, "x0": x0, "runs": {}, "target_mean": gm.means[1], "target_std": gm.stds[1]}
    for c in couplings:
        system = Members(bb, bb.encode_conditions([Condition(0), Condition(1)]), 2)
        sol = solve(
            system,
            torch.stack([path[0], path[0]]),
            grid,
            "euler",
            noise=PathDriver(path, extra_seed=seed + 1),
            coupling=c,
            save_at="all",
        )
        y = sol.y[1]
        out["runs"][str(c)] = {
            "paths": sol.ys,
            "distance": member_distance(sol.ys)[:, 1],
            "mean": y.mean(0),
            "std": y.std(0),
            "corr": float(torch.corrcoef(torch.stack([y[:, 0], x0[:, 0]]))[0, 1]),
        }
    return out


def plot_coupled_paths(study: dict, path: str | Path, n_paths: int = 12) -> None:
    """Left: source and target paths in the plane; right: mean distance between members over sigma."""
    from .plots import _pyplot

    plt = _pyplot()
    runs = study["runs"]
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(4 * (len(runs) + 1), 3.8))
    for ax, (name, run) in zip(axes, runs.items()):
        ys = run["paths"].numpy()
        for i in range(n_paths):
            ax.plot(ys[:, 0, i, 0], ys[:, 0, i, 1], color="tab:blue", alpha=0.5, lw=0.8)
            ax.plot(ys[:, 1, i, 0], ys[:, 1, i, 1], color="tab:red", alpha=0.6, lw=0.8)
            ax.plot([ys[-1, 0, i, 0], ys[-1, 1, i, 0]], [ys[-1, 0, i, 1], ys[-1, 1, i, 1]], color="gray", lw=0.5, ls=":")
        ax.set_title(f"{name}: corr(source, edit) = {run['corr']:.2f}", fontsize=9)
        ax.set_aspect("equal")
    sig = study["grid"].tolist()
    for name, run in runs.items():
        axes[-1].plot(sig, run["distance"].tolist(), label=name)
    axes[-1].invert_xaxis()
    axes[-1].set_xlabel("noise level sigma (integration runs right)")
    axes[-1].set_ylabel("mean |target - source|")
    axes[-1].legend(fontsize=8)
    axes[-1].grid(True, alpha=0.3)
    fig.suptitle("class 0 → class 1 on a Gaussian mixture: source (blue) and target (red) paths", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
