"""Editing held-out digits with every method on the shipped model: fidelity against preservation.

Each source digit gets a target class; every method runs at a few hyperparameter settings with the
*same* per-edit seed, so methods are compared on equal terms. Fidelity is the shipped classifier's
probability of the target class (higher is better); preservation is the L1 / L2 distance to the
source in pixel units 0..16 (lower is better). This is what ``coupled-sde demo`` shows and what
``benchmarks/digits_frontier.py`` runs at scale.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..backends.base import Condition
from ..editing import edit_latents

__all__ = [
    "DEFAULT_SETTINGS",
    "EditRow",
    "pick_edits",
    "run_comparison",
    "summarize",
    "save_rows",
    "plot_frontier",
    "plot_edit_grid",
]

#: Guidance shared by every method (classifier-free scale of the digits model): the source at 1 (the
#: plain conditional model), the target at 3 -- sync-SDE's best pair in a sweep over
#: {1, 2} x {1, 2, 3}, applied to all methods so that they compare on equal terms.
SOURCE_GUIDANCE, TARGET_GUIDANCE = 1.0, 3.0

#: Three settings per method (gentle to strong) on a 20-step schedule, matched in model evaluations
#: per edit (16 / 20 / 24 for sync-SDE, ODE inversion and FlowEdit; SDEdit uses half).
DEFAULT_SETTINGS: dict[str, list[dict[str, Any]]] = {
    "sync-sde": [dict(start=12), dict(start=10), dict(start=8)],
    "sdedit": [dict(start=12), dict(start=10), dict(start=8)],
    "ode-inversion": [dict(start=12), dict(start=10), dict(start=8)],
    "flowedit": [dict(n_max=8), dict(n_max=10), dict(n_max=12)],
}


@dataclass
class EditRow:
    method: str
    setting: dict[str, Any]
    fidelity: float
    l1: float
    l2: float
    model_evaluations: int
    seconds: float
    n_edits: int
    per_edit: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method} " + ",".join(f"{k}={v}" for k, v in self.setting.items())


def pick_edits(
    images: torch.Tensor, labels: torch.Tensor, n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` held-out digits (balanced over classes) and a target class != source class for each."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    by_class: dict[int, list[int]] = {c: [] for c in range(10)}
    for i in order.tolist():
        by_class[int(labels[i])].append(i)
    chosen = []
    while len(chosen) < n:
        for c in range(10):
            if by_class[c] and len(chosen) < n:
                chosen.append(by_class[c].pop())
    idx = torch.tensor(chosen)
    src = labels[idx]
    tgt = (src + torch.randint(1, 10, (n,), generator=g)) % 10
    return images[idx], src, tgt


def _to_pixels(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1.0) * 8.0).reshape(x.shape[0], -1)


def run_comparison(
    backbone: Any,
    classifier: torch.nn.Module,
    x_src: torch.Tensor,
    src_labels: torch.Tensor,
    tgt_labels: torch.Tensor,
    settings: dict[str, list[dict[str, Any]]] | None = None,
    *,
    n_steps: int = 20,
    source_guidance: float = SOURCE_GUIDANCE,
    target_guidance: float = TARGET_GUIDANCE,
    seed: int = 0,
    keep_edits: bool = False,
) -> tuple[list[EditRow], dict[tuple[str, str], torch.Tensor]]:
    """Run every method and setting on every (source, target) pair; per-edit seeds ``seed + i``."""
    settings = settings or DEFAULT_SETTINGS
    seeds = [seed + i for i in range(len(x_src))]
    rows, edits = [], {}
    # One batch per method and setting: the digits backbone takes one class per sample.
    src = Condition(tuple(int(c) for c in src_labels), source_guidance)
    tgt = Condition(tuple(int(c) for c in tgt_labels), target_guidance)
    for method, method_settings in settings.items():
        for setting in method_settings:
            kw: dict[str, Any] = dict(n_steps=n_steps, seed=seeds, **setting)
            res = edit_latents(backbone, x_src, method, src, tgt, **kw)
            out, evals, secs = res.latents, res.model_evaluations * len(x_src), res.seconds
            with torch.no_grad():
                prob = torch.softmax(classifier(out.clamp(-1, 1)), -1).gather(1, tgt_labels[:, None])[:, 0]
            d = _to_pixels(out) - _to_pixels(x_src)
            l1, l2 = d.abs().mean(1), d.pow(2).mean(1).sqrt()
            rows.append(
                EditRow(
                    method,
                    dict(setting),
                    float(prob.mean()),
                    float(l1.mean()),
                    float(l2.mean()),
                    evals,
                    secs,
                    len(x_src),
                    dict(fidelity=prob.tolist(), l1=l1.tolist(), l2=l2.tolist()),
                )
            )
            if keep_edits:
                edits[(method, json.dumps(setting, sort_keys=True))] = out
    return rows, edits


def summarize(rows: Sequence[EditRow]) -> str:
    """A plain-text table: one line per method and setting."""
    head = f"{'method':<15}{'setting':<14}{'fidelity ↑':>11}{'L1 ↓':>8}{'L2 ↓':>8}{'evals/edit':>12}{'s/edit':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        setting = ",".join(f"{k}={v}" for k, v in r.setting.items())
        lines.append(
            f"{r.method:<15}{setting:<14}{r.fidelity:>11.3f}{r.l1:>8.3f}{r.l2:>8.3f}{r.model_evaluations / r.n_edits:>12.1f}{r.seconds / r.n_edits:>9.4f}"
        )
    return "\n".join(lines)


def save_rows(rows: Sequence[EditRow], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "setting", "fidelity", "l1", "l2", "model_evaluations_per_edit", "seconds_per_edit", "n_edits"])
        for r in rows:
            w.writerow(
                [
                    r.method,
                    json.dumps(r.setting, sort_keys=True),
                    f"{r.fidelity:.5f}",
                    f"{r.l1:.5f}",
                    f"{r.l2:.5f}",
                    r.model_evaluations / r.n_edits,
                    f"{r.seconds / r.n_edits:.6f}",
                    r.n_edits,
                ]
            )


def plot_frontier(rows: Sequence[EditRow], path: str | Path, distance: str = "l2") -> None:
    """Fidelity (↑) against distance to the source (↓), one point per method and setting."""
    from .plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for method in dict.fromkeys(r.method for r in rows):
        rs = [r for r in rows if r.method == method]
        xs, ys = [getattr(r, distance) for r in rs], [r.fidelity for r in rs]
        ax.plot(xs, ys, "o-", label=method)
        for r, x, y in zip(rs, xs, ys):
            ax.annotate(
                ",".join(f"{v}" for v in r.setting.values()), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_xlabel(f"{distance.upper()} distance to the source (pixels 0..16, lower is better)")
    ax.set_ylabel("classifier P(target class) (higher is better)")
    ax.set_title("Editing held-out digits: fidelity vs preservation")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_edit_grid(
    x_src: torch.Tensor, edits: dict[str, torch.Tensor], tgt_labels: torch.Tensor, path: str | Path, n_show: int = 10
) -> None:
    """Rows: source, then per method its edit and |edit - source|; one column per edit."""
    from .plots import _pyplot

    plt = _pyplot()
    n = min(n_show, len(x_src))
    rows = [("source", x_src)]
    for name, out in edits.items():
        rows += [(name, out), (f"|{name} - source|", (out - x_src).abs() - 1.0)]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.8, len(rows) * 0.85))
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c, 0].clamp(-1, 1).cpu().numpy(), cmap="gray_r" if "|" not in name else "magma", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(f"→ {int(tgt_labels[c])}", fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=130)
    plt.close(fig)
