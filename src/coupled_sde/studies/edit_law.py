"""The law of edits: does an editing method produce the target class's distribution?

On a two-class Gaussian mixture with exact rectified-flow velocities
(:class:`~coupled_sde.backends.analytic.GaussianMixtureBackbone`, guidance 1 = the exact conditional
model), source samples of class 0 are edited to class 1 by every method. The target law is known
exactly, ``N(m_1, s_1^2 I)``, so each method's edits can be compared with it:

* their mean and covariance against ``m_1`` and ``s_1^2 I``;
* ``W2``: the 2-Wasserstein distance to the target law, between Gaussians fitted to the edits and
  the exact target (Bures formula), and between the edits and as many exact target samples
  (optimal assignment); the latter's floor is the same distance between two exact sample sets;
* the RMS distance from each source to its edit, ``sqrt(E|y - x|^2)``, against the optimal-transport
  bound ``W2(source law, target law) = sqrt(|m_1 - m_0|^2 + d (s_1 - s_0)^2)``: no map that produces
  the target law can move the sources less; a method *below* the bound does not produce the target law.

A method that preserves better than the bound only does so by shrinking the target's spread: that
is what a fidelity-vs-distance frontier alone rewards, and what this study exposes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..backends.analytic import GaussianMixtureBackbone
from ..backends.base import Condition
from ..problems import GaussianMixture

__all__ = ["LawRow", "law_mixture", "gaussian_w2", "empirical_w2", "edit_law", "plot_edit_law", "save_law_rows", "law_table"]

#: Schedule shift that puts step N/7 at sigma = 0.95 for every N divisible by 7 (FLUX's i0 = 4 of 28).
SHIFT = 19.0 / 6.0


def law_mixture() -> GaussianMixture:
    """Class 0: ``N((-2, -1), 0.6^2 I)``; class 1 (the target): ``N((2, 1), 1.0^2 I)`` (float64)."""
    return GaussianMixture(torch.tensor([[-2.0, -1.0], [2.0, 1.0]], dtype=torch.float64), torch.tensor([0.6, 1.0]))


def gaussian_w2(mean: torch.Tensor, cov: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> float:
    """W2 between ``N(mean, cov)`` and ``N(mean2, cov2)``: ``|m - m2|^2 + tr(C + C2 - 2 (C^1/2 C2 C^1/2)^1/2)``."""
    lam, vec = torch.linalg.eigh(cov.double())
    r = (vec * lam.clamp_min(0).sqrt()) @ vec.T
    cross = torch.linalg.eigvalsh(r @ cov2.double() @ r).clamp_min(0).sqrt().sum()
    w2sq = (mean - mean2).double().pow(2).sum() + torch.trace(cov.double()) + torch.trace(cov2.double()) - 2 * cross
    return math.sqrt(max(float(w2sq), 0.0))


def empirical_w2(a: torch.Tensor, b: torch.Tensor) -> float:
    """W2 between two equal-size point sets ``(n, d)`` by an optimal assignment (exact for empirical laws)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(a.double(), b.double()).pow(2).numpy()
    i, j = linear_sum_assignment(cost)
    return math.sqrt(float(cost[i, j].mean()))


@dataclass
class LawRow:
    method: str
    n_steps: int
    setting: dict[str, Any]
    mean: list[float]
    cov: list[list[float]]
    w2_gaussian: float
    w2_empirical: float
    rms: float
    ot_bound: float
    model_evaluations: int

    @property
    def rms_over_bound(self) -> float:
        return self.rms / self.ot_bound


def _law_settings(method: str, n_steps: int) -> dict[str, Any] | None:
    from .scene_editing import method_parameters

    params = method_parameters(method)
    if not params:
        return None
    start = n_steps // 7
    if "n_max" in params:
        return dict(n_max=n_steps - start)
    if "start" in params:
        return dict(start=start)
    return {}


def edit_law(
    methods: Sequence[str] | None = None,
    step_counts: Sequence[int] = (7, 14, 28, 56),
    n: int = 2000,
    seed: int = 0,
    variants: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[LawRow], float]:
    """Every method (default: the registry) at every step count, from sigma = 0.95; also returns the
    empirical-W2 floor (two independent exact target sets of size ``n``)."""
    from .scene_editing import method_names

    for k in step_counts:
        if k < 7 or k % 7:
            raise ValueError(f"step counts must be multiples of 7 (the start is step N/7, sigma 0.95), got {k}")
    gm = law_mixture()
    bb = GaussianMixtureBackbone(gm, shift=SHIFT)
    g = torch.Generator().manual_seed(seed)
    x0, _ = gm.sample(n, g, component=0)
    ref, _ = gm.sample(n, g, component=1)
    ref2, _ = gm.sample(n, g, component=1)
    floor = empirical_w2(ref, ref2)
    m1, c1 = gm.means[1], torch.diag(gm.stds[1] ** 2)
    m0, s0, s1 = gm.means[0], gm.stds[0], gm.stds[1]
    bound = math.sqrt(float((m1 - m0).pow(2).sum() + (s1 - s0).pow(2).sum()))
    runs: dict[str, dict[str, Any]] = {m: {"method": m} for m in (methods if methods is not None else method_names())}
    runs.update(variants or {})
    rows = []
    from ..editing import edit_latents

    for name, spec in runs.items():
        spec = dict(spec)
        method = spec.pop("method")
        for k in step_counts:
            setting = _law_settings(method, k)
            if setting is None:
                continue
            setting.update(spec)
            res = edit_latents(bb, x0, method, Condition(0), Condition(1), n_steps=k, seed=seed + 1, **setting)
            y = res.latents.double()
            shown = dict(setting)
            rows.append(
                LawRow(
                    name,
                    k,
                    shown,
                    y.mean(0).tolist(),
                    torch.cov(y.T).tolist(),
                    gaussian_w2(y.mean(0), torch.cov(y.T), m1, c1),
                    empirical_w2(y, ref),
                    float((y - x0).pow(2).sum(1).mean().sqrt()),
                    bound,
                    res.model_evaluations,
                )
            )
    return rows, floor


def law_table(rows: Sequence[LawRow], floor: float | None = None) -> str:
    head = f"{'method':<22}{'steps':>6}{'mean':>18}{'var x':>8}{'var y':>8}{'cov':>7}{'W2 fit':>8}{'W2 emp':>8}{'RMS':>7}{'RMS/OT':>8}{'evals':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        mean = f"({r.mean[0]:.2f}, {r.mean[1]:.2f})"
        lines.append(
            f"{r.method:<22}{r.n_steps:>6}{mean:>18}{r.cov[0][0]:>8.3f}{r.cov[1][1]:>8.3f}{r.cov[0][1]:>7.3f}"
            f"{r.w2_gaussian:>8.3f}{r.w2_empirical:>8.3f}{r.rms:>7.3f}{r.rms_over_bound:>8.3f}{r.model_evaluations:>6}"
        )
    if rows:
        lines.append(f"target law: mean (2, 1), variance 1.0 per axis; OT bound on the RMS {rows[0].ot_bound:.3f}")
    if floor is not None:
        lines.append(f"empirical W2 floor (two exact target sets of the same size): {floor:.3f}")
    return "\n".join(lines)


def save_law_rows(rows: Sequence[LawRow], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "method",
                "n_steps",
                "mean_x",
                "mean_y",
                "var_x",
                "var_y",
                "cov_xy",
                "w2_gaussian",
                "w2_empirical",
                "rms",
                "ot_bound",
                "rms_over_bound",
                "model_evaluations",
            ]
        )
        for r in rows:
            w.writerow(
                [
                    r.method,
                    r.n_steps,
                    *(
                        f"{v:.5f}"
                        for v in (
                            r.mean[0],
                            r.mean[1],
                            r.cov[0][0],
                            r.cov[1][1],
                            r.cov[0][1],
                            r.w2_gaussian,
                            r.w2_empirical,
                            r.rms,
                            r.ot_bound,
                            r.rms_over_bound,
                        )
                    ),
                    r.model_evaluations,
                ]
            )


def plot_edit_law(rows: Sequence[LawRow], path: str | Path, floor: float | None = None) -> None:
    """W2 to the target law and RMS / OT bound against the step count, one line per method."""
    from .plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for m in dict.fromkeys(r.method for r in rows):
        rs = [r for r in rows if r.method == m]
        ks = [r.n_steps for r in rs]
        axes[0].plot(ks, [r.w2_empirical for r in rs], "o-", label=m)
        axes[1].plot(ks, [r.rms_over_bound for r in rs], "o-", label=m)
    if floor is not None:
        axes[0].axhline(floor, color="gray", ls=":", label="sampling floor")
    axes[1].axhline(1.0, color="gray", ls=":", label="optimal transport")
    steps = sorted({r.n_steps for r in rows})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(steps, [str(k) for k in steps])
        ax.minorticks_off()
        ax.set_xlabel("steps of the full schedule (edits start at sigma = 0.95)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("W2(edits, exact target law) (↓ better)")
    axes[1].set_ylabel("RMS distance to source / OT bound")
    axes[0].legend(fontsize=7)
    fig.suptitle("Editing class 0 → class 1 of a 2-D Gaussian mixture with exact velocities", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
