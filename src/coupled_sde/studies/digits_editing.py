"""Editing held-out digits with every method on the shipped model: fidelity against preservation.

Each source digit gets a target class; every method runs at a few hyperparameter settings with the
*same* per-edit seed, so methods are compared on equal terms. Fidelity is the shipped classifier's
probability of the target class (higher is better); preservation is the L1 / L2 distance to the
source in pixel units 0..16 (lower is better); realism is the Fréchet distance, in the classifier's
features, between the edits and held-out digits of the edits' target classes (lower is better: an
edit can sit close to its source and be recognised as the target and still not look like the target
class's digits). This is what ``coupled-sde demo --model digits`` shows and what
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
    "scaled_settings",
    "digit_features",
    "reference_digits",
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
    frechet: float = float("nan")
    per_edit: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method} " + ",".join(f"{k}={v}" for k, v in self.setting.items())


def pick_edits(
    images: torch.Tensor, labels: torch.Tensor, n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` held-out digits (balanced over classes) and a target class != source class for each."""
    if not 1 <= n <= len(labels):
        raise ValueError(f"can pick between 1 and {len(labels)} held-out digits, got n={n}")
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


def scaled_settings(n_steps: int, settings: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """:data:`DEFAULT_SETTINGS` (defined on 20 steps) rescaled to ``n_steps``, duplicates dropped.

    ``start`` and ``n_max`` are rescaled through the number of *active* steps (``20 - start`` and
    ``n_max``), each kept in ``1..n_steps - 1`` (a start of 0 is sigma = 1, where the SDE is singular),
    so a short schedule gives fewer, distinct settings instead of repeated rows.
    """
    if n_steps < 2:
        raise ValueError(f"need at least 2 steps, got {n_steps}")
    out: dict[str, list[dict[str, Any]]] = {}
    for method, ss in (settings or DEFAULT_SETTINGS).items():
        scaled = []
        for s in ss:
            new = dict(s)
            if "start" in s:
                active = min(n_steps - 1, max(1, round((20 - s["start"]) * n_steps / 20)))
                new["start"] = n_steps - active
            if "n_max" in s:
                new["n_max"] = min(n_steps - 1, max(1, round(s["n_max"] * n_steps / 20)))
            if new not in scaled:
                scaled.append(new)
        out[method] = scaled
    return out


def digit_features(classifier: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's penultimate features (its conv trunk, flattened): the space of the Fréchet distance."""
    with torch.no_grad():
        return classifier.features(x.clamp(-1, 1)).flatten(1)


def reference_digits(
    images: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor, seed: int = 0, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """One held-out digit of each requested class (drawn with replacement from that class, from ``seed``)."""
    g = torch.Generator().manual_seed(10_007 + seed)
    out = []
    for c in classes.tolist():
        pool = (labels == c).nonzero()[:, 0]
        out.append(images[pool[torch.randint(0, len(pool), (1,), generator=g)]])
    return torch.cat(out)


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
    reference: torch.Tensor | None = None,
) -> tuple[list[EditRow], dict[tuple[str, str], torch.Tensor]]:
    """Run every method and setting on every (source, target) pair; per-edit seeds ``seed + i``.

    ``reference``: real digits with the target classes (e.g. :func:`reference_digits`); when given,
    each row carries the Fréchet distance of its edits to them in the classifier's features.
    """
    from .scene_metrics import frechet_distance

    settings = settings or DEFAULT_SETTINGS
    ref_features = digit_features(classifier, reference) if reference is not None else None
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
            fd = frechet_distance(digit_features(classifier, out), ref_features) if ref_features is not None else float("nan")
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
                    fd,
                    dict(fidelity=prob.tolist(), l1=l1.tolist(), l2=l2.tolist()),
                )
            )
            if keep_edits:
                edits[(method, json.dumps(setting, sort_keys=True))] = out
    return rows, edits


def summarize(rows: Sequence[EditRow]) -> str:
    """A plain-text table: one line per method and setting."""
    head = f"{'method':<15}{'setting':<14}{'fidelity ↑':>11}{'L1 ↓':>8}{'L2 ↓':>8}{'FD ↓':>8}{'evals/edit':>12}{'s/edit':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        setting = ",".join(f"{k}={v}" for k, v in r.setting.items())
        lines.append(
            f"{r.method:<15}{setting:<14}{r.fidelity:>11.3f}{r.l1:>8.3f}{r.l2:>8.3f}{r.frechet:>8.2f}{r.model_evaluations / r.n_edits:>12.1f}{r.seconds / r.n_edits:>9.4f}"
        )
    return "\n".join(lines)


def save_rows(rows: Sequence[EditRow], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "setting", "fidelity", "l1", "l2", "frechet", "model_evaluations_per_edit", "seconds_per_edit", "n_edits"])
        for r in rows:
            w.writerow(
                [
                    r.method,
                    json.dumps(r.setting, sort_keys=True),
                    f"{r.fidelity:.5f}",
                    f"{r.l1:.5f}",
                    f"{r.l2:.5f}",
                    f"{r.frechet:.5f}",
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
                ",".join(f"{k}={v}" for k, v in r.setting.items()), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_xlabel(f"{distance.upper()} distance to the source (pixels 0..16, lower is better)")
    ax.set_ylabel("classifier P(target class) (higher is better)")
    ax.set_title("Editing held-out digits: fidelity vs preservation", fontsize=10)
    fig.text(
        0.01,
        0.005,
        "start = first step of the schedule (smaller = edit from more noise = stronger); "
        "n_max = FlowEdit's active steps (larger = stronger)",
        fontsize=6,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_edit_grid(
    x_src: torch.Tensor, edits: dict[str, torch.Tensor], tgt_labels: torch.Tensor, path: str | Path, n_show: int = 10
) -> None:
    """Rows: source, then per method its edit and |edit - source| (pixels 0..16, on a colour bar);
    one column per edit (any number, even one)."""
    from .plots import _pyplot

    plt = _pyplot()
    n = min(n_show, len(x_src))
    rows = [("source", x_src, False)]
    for name, out in edits.items():
        rows += [(name, out, False), (f"|{name} − source|", (out.clamp(-1, 1) - x_src).abs() * 8.0, True)]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.8 + 2.4, len(rows) * 0.85 + 0.3), squeeze=False)
    image = None
    for r, (name, imgs, is_diff) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            if is_diff:
                image = ax.imshow(imgs[c, 0].cpu().numpy(), cmap="magma", vmin=0, vmax=16)
            else:
                ax.imshow(imgs[c, 0].clamp(-1, 1).cpu().numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(f"→ {int(tgt_labels[c])}", fontsize=7)
    fig.subplots_adjust(left=1.6 / (n * 0.8 + 2.4), right=1 - 0.8 / (n * 0.8 + 2.4), top=0.96, bottom=0.02, wspace=0.05, hspace=0.1)
    if image is not None:
        cax = fig.add_axes((1 - 0.6 / (n * 0.8 + 2.4), 0.15, 0.12 / (n * 0.8 + 2.4), 0.6))
        cb = fig.colorbar(image, cax=cax)
        cb.set_label("|edit − source| (pixels 0..16)", fontsize=6)
        cb.ax.tick_params(labelsize=5)
    fig.savefig(path, dpi=130)
    plt.close(fig)
