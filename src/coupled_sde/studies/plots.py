"""Matplotlib figures for convergence and member-distance studies (Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .convergence import ConvergenceResult

__all__ = ["plot_convergence", "plot_member_distance"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_convergence(results: Sequence[ConvergenceResult], path: str | Path | None = None, title: str | None = None):
    """Log-log error against step size, one line per result, with the fitted order in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results:
        ax.loglog(r.step_sizes, r.errors, "o-", label=f"{r.integrator} ({r.kind}): order {r.order:.2f}")
        ax.loglog(r.step_sizes, [r.constant * h**r.order for h in r.step_sizes], ":", color=ax.lines[-1].get_color())
    ax.set_xlabel("step size h")
    ax.set_ylabel("error")
    ax.set_title(title or "convergence")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_member_distance(
    ts: Sequence[float], distances: dict[str, torch.Tensor], path: str | Path | None = None, title: str | None = None
):
    """Distance between members over time, one line per labelled curve ``(T,)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, d in distances.items():
        ax.plot(list(ts), d.detach().cpu().tolist(), label=label)
    ax.set_xlabel("t")
    ax.set_ylabel("mean distance between members")
    ax.set_title(title or "coupled members")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
