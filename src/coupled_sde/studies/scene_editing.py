"""Editing scenes with ground truth: every method on three axes (fidelity, preservation, realism).

Three kinds of edit on held-out scenes of the shipped scene model
(:mod:`coupled_sde.backends.scenes`), each with its ground truth known by construction:

* ``shape``: the object becomes another shape; everything outside the union of the old and the new
  object's masks (dilated by one pixel) must survive;
* ``colour``: the object takes another colour; everything outside its mask (dilated) must survive;
* ``texture``: the background becomes another texture; the object (its mask eroded by one pixel)
  must survive.

For every method and setting, with the *same* per-edit seeds and a model-evaluation count reported
per edit, the axes are:

* **fidelity**: the held-out classifier's probability (and accuracy) of the target value of the
  edited attribute;
* **preservation**: PSNR, SSIM and an LPIPS-style feature distance over the pixels that must
  survive (:mod:`coupled_sde.studies.scene_metrics`), and the classifier's accuracy on the two
  attributes that were not edited (they must keep the source's values);
* **realism**: the Fréchet distance, in the classifier's pooled features, between the edits and as
  many real held-out scenes drawn with the edits' target attributes (the floor is the distance
  between two independent real sets, reported as ``real-vs-real``).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..backends.base import Condition
from ..backends.scenes import ATTRIBUTES, N_VALUES, render, sample_params
from ..editing import edit_latents
from .scene_metrics import frechet_distance, masked_feature_distance, masked_psnr, masked_ssim

__all__ = [
    "EDIT_KINDS",
    "SOURCE_GUIDANCE",
    "TARGET_GUIDANCE",
    "N_STEPS",
    "SceneEdits",
    "SceneRow",
    "make_edits",
    "method_parameters",
    "scaled_active_steps",
    "method_names",
    "default_settings",
    "run_scene_benchmark",
    "real_floor",
    "summarize_scenes",
    "save_scene_rows",
    "plot_scene_frontier",
    "plot_scene_edits",
]

EDIT_KINDS: tuple[str, ...] = ATTRIBUTES  # shape, colour, texture: the attribute each edit changes
#: Guidance shared by every method: the source at 1 (the conditional model), the target at 2.
SOURCE_GUIDANCE, TARGET_GUIDANCE = 1.0, 2.0
#: Steps of the full schedule.
N_STEPS = 20
#: Three strengths per method, matched in model evaluations per edit (20 / 24 / 28 on 20 steps for the
#: two-member methods; SDEdit, one member, uses half): sigma_0 = 0.5, 0.6, 0.7.
ACTIVE_STEPS: tuple[int, ...] = (10, 12, 14)


def scaled_active_steps(n_steps: int, active: Sequence[int] = ACTIVE_STEPS) -> list[int]:
    """:data:`ACTIVE_STEPS` (defined on 20 steps) rescaled to ``n_steps``: distinct, each in 1..n_steps - 1."""
    if n_steps < 2:
        raise ValueError(f"need at least 2 steps, got {n_steps}")
    out = [min(n_steps - 1, max(1, round(k * n_steps / N_STEPS))) for k in active]
    return list(dict.fromkeys(out))


def _dilate(m: torch.Tensor, r: int = 1) -> torch.Tensor:
    return F.max_pool2d(m.float(), 2 * r + 1, stride=1, padding=r) > 0.5


@dataclass
class SceneEdits:
    """A batch of edits of one kind: sources, labels, the pixels to keep, ground truth, real references."""

    kind: str
    source: torch.Tensor
    source_labels: torch.Tensor
    target_labels: torch.Tensor
    keep: torch.Tensor
    truth: torch.Tensor
    reference: torch.Tensor

    def __len__(self) -> int:
        return int(self.source.shape[0])


def make_edits(kind: str, n: int, seed: int = 0) -> SceneEdits:
    """``n`` held-out scenes and their ``kind`` edit (target value != source value), all from ``seed``."""
    if kind not in EDIT_KINDS:
        raise ValueError(f"edit kind must be one of {EDIT_KINDS}, got {kind!r}")
    if n < 1:
        raise ValueError(f"need at least one edit, got n={n}")
    g = torch.Generator().manual_seed(seed * 7919 + EDIT_KINDS.index(kind))
    p = sample_params(n, g, "heldout")
    a = EDIT_KINDS.index(kind)
    src_labels = p.labels()
    new = (src_labels[:, a] + torch.randint(1, N_VALUES[a], (n,), generator=g)) % N_VALUES[a]
    tgt_labels = src_labels.clone()
    tgt_labels[:, a] = new
    q = p.with_(**{kind: new})
    x, alpha = render(p)
    truth, alpha_t = render(q)
    if kind == "shape":
        keep = ~_dilate((alpha > 0.01) | (alpha_t > 0.01))
    elif kind == "colour":
        keep = ~_dilate(alpha > 0.01)
    else:
        keep = ~_dilate(alpha < 0.99)  # the object's interior, eroded by one pixel
    reference = render(sample_params(n, g, "heldout", labels=tgt_labels))[0]
    return SceneEdits(kind, x, src_labels, tgt_labels, keep, truth, reference)


def method_names() -> list[str]:
    """Every editing method of the registry (:mod:`coupled_sde.editing.registry`), in its order."""
    from ..editing.registry import method_names as registered

    return list(registered())


def method_parameters(name: str) -> dict[str, Any]:
    """The settings a registered method declares (settings vocabulary: ``steps``, ``start``, ``n_max``, ``eta``, ...)."""
    from ..editing.registry import get_method

    return dict(get_method(name).settings)


def default_settings(name: str, n_steps: int = N_STEPS, active: Sequence[int] = ACTIVE_STEPS) -> list[dict[str, Any]]:
    """Three strengths of a method by its knob: FlowEdit's ``n_max`` where declared, else ``start``.

    Both count active steps so that ``start = n_steps - k`` and ``n_max = k`` cost the same calls.
    """
    params = method_parameters(name)
    if "n_max" in params:
        return [dict(n_max=k) for k in active]
    if "start" in params:
        return [dict(start=n_steps - k) for k in active]
    return [{}]


@dataclass
class SceneRow:
    kind: str
    method: str
    setting: dict[str, Any]
    fidelity: float  # mean P(target value of the edited attribute)
    accuracy: float  # fraction classified as the target value
    kept_accuracy: float  # fraction with both unedited attributes classified as the source's
    psnr: float  # over kept pixels
    ssim: float
    feature_distance: float  # LPIPS-style, over kept pixels
    psnr_truth: float  # whole image against the ground truth (shape and colour edits)
    frechet: float
    model_evaluations: float  # per edit
    seconds: float  # per edit
    n_edits: int
    per_edit: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method} " + ",".join(f"{k}={v}" for k, v in self.setting.items())


def _conditions(labels: torch.Tensor, guidance: float) -> Condition:
    return Condition(tuple(tuple(int(v) for v in row) for row in labels), guidance)


def _kw_for(method: str, setting: dict[str, Any], n_steps: int, seeds: list[int]) -> dict[str, Any]:
    kw: dict[str, Any] = dict(n_steps=n_steps, seed=seeds, **setting)
    params = method_parameters(method)
    if "steps" not in params:
        kw.pop("n_steps")
    return kw


def measure(classifier: torch.nn.Module, edits: SceneEdits, out: torch.Tensor) -> dict[str, torch.Tensor | float]:
    """Every per-edit measure of ``out`` against ``edits`` (and the Fréchet distance of the batch)."""
    a = EDIT_KINDS.index(edits.kind)
    out = out.clamp(-1, 1)
    with torch.no_grad():
        logits = classifier(out)
        feats = classifier.features(out)
        ref = classifier.features(edits.reference)
    prob = torch.softmax(logits[a], -1).gather(1, edits.target_labels[:, a : a + 1])[:, 0]
    pred = torch.stack([lg.argmax(1) for lg in logits], 1)
    others = [k for k in range(3) if k != a]
    kept = (pred[:, others] == edits.source_labels[:, others]).all(1).float()
    return dict(
        fidelity=prob,
        accuracy=(pred[:, a] == edits.target_labels[:, a]).float(),
        kept_accuracy=kept,
        psnr=masked_psnr(out, edits.source, edits.keep),
        ssim=masked_ssim(out, edits.source, edits.keep),
        feature_distance=masked_feature_distance(classifier.feature_maps, out, edits.source, edits.keep),
        psnr_truth=masked_psnr(out, edits.truth),
        frechet=frechet_distance(feats, ref) if len(out) >= 2 else float("nan"),  # a covariance needs two edits
    )


def run_scene_benchmark(
    backbone: Any,
    classifier: torch.nn.Module,
    edits: Sequence[SceneEdits],
    settings: dict[str, list[dict[str, Any]]] | None = None,
    *,
    n_steps: int = N_STEPS,
    source_guidance: float = SOURCE_GUIDANCE,
    target_guidance: float = TARGET_GUIDANCE,
    seed: int = 0,
    keep_edits: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[SceneRow], dict[tuple[str, str, str], torch.Tensor]]:
    """Every method (default: the whole registry at :func:`default_settings`) on every edit batch.

    Settings map a row name to a list of keyword dicts; a dict may carry ``"method"`` to run a
    variant of another method under its own row name (e.g. ``{"sync-sde heun": [dict(method="sync-sde",
    integrator="heun", start=8)]}``). Edit ``i`` of every batch uses seed ``seed + i`` for every method.
    """
    settings = settings if settings is not None else {m: default_settings(m, n_steps) for m in method_names()}
    rows: list[SceneRow] = []
    kept: dict[tuple[str, str, str], torch.Tensor] = {}
    for batch in edits:
        seeds = [seed + i for i in range(len(batch))]
        src = _conditions(batch.source_labels, source_guidance)
        tgt = _conditions(batch.target_labels, target_guidance)
        for name, name_settings in settings.items():
            for setting in name_settings:
                setting = dict(setting)
                method = setting.pop("method", name)
                t0 = time.perf_counter()
                res = edit_latents(backbone, batch.source, method, src, tgt, **_kw_for(method, setting, n_steps, seeds))
                secs = time.perf_counter() - t0
                m = measure(classifier, batch, res.latents)
                per = {k: v.tolist() for k, v in m.items() if isinstance(v, torch.Tensor)}
                rows.append(
                    SceneRow(
                        batch.kind,
                        name,
                        setting,
                        *(
                            float(torch.tensor(per[k]).nanmean())
                            for k in ("fidelity", "accuracy", "kept_accuracy", "psnr", "ssim", "feature_distance", "psnr_truth")
                        ),
                        frechet=float(m["frechet"]),
                        model_evaluations=float(res.model_evaluations),
                        seconds=secs / len(batch),
                        n_edits=len(batch),
                        per_edit=per,
                    )
                )
                if progress is not None:
                    progress(f"{batch.kind:<8}{rows[-1].label:<40}{secs:6.1f}s")
                if keep_edits:
                    kept[(batch.kind, name, json.dumps(setting, sort_keys=True))] = res.latents
    return rows, kept


def real_floor(classifier: torch.nn.Module, edits: SceneEdits, seed: int = 1) -> float:
    """Fréchet distance between the batch's real references and an independent real set of the same labels."""
    if len(edits) < 2:
        return float("nan")
    g = torch.Generator().manual_seed(10_000 + seed)
    other = render(sample_params(len(edits), g, "heldout", labels=edits.target_labels))[0]
    with torch.no_grad():
        return frechet_distance(classifier.features(other), classifier.features(edits.reference))


_COLUMNS = (
    ("fidelity", "P(tgt)↑", ".3f"),
    ("accuracy", "acc↑", ".2f"),
    ("kept_accuracy", "kept↑", ".2f"),
    ("psnr", "PSNR↑", ".1f"),
    ("ssim", "SSIM↑", ".3f"),
    ("feature_distance", "feat↓", ".3f"),
    ("psnr_truth", "PSNRgt↑", ".1f"),
    ("frechet", "FD↓", ".2f"),
    ("model_evaluations", "evals", ".0f"),
)


def summarize_scenes(rows: Sequence[SceneRow], floors: dict[str, float] | None = None) -> str:
    """A plain-text table, one line per edit kind, method and setting."""
    head = f"{'edit':<8}{'method':<22}{'setting':<12}" + "".join(f"{h:>9}" for _, h, _ in _COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        s = ",".join(f"{k}={v}" for k, v in r.setting.items())
        lines.append(f"{r.kind:<8}{r.method:<22}{s:<12}" + "".join(f"{getattr(r, k):>9{f}}" for k, _, f in _COLUMNS))
    if floors:
        lines.append("real-vs-real Fréchet floor: " + ", ".join(f"{k} {v:.2f}" for k, v in floors.items()))
    return "\n".join(lines)


def save_scene_rows(rows: Sequence[SceneRow], path: str | Path) -> None:
    names = [k for k, _, _ in _COLUMNS]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["edit", "method", "setting", *names, "seconds_per_edit", "n_edits"])
        for r in rows:
            w.writerow(
                [r.kind, r.method, json.dumps(r.setting, sort_keys=True)]
                + [f"{getattr(r, k):.5f}" for k in names]
                + [f"{r.seconds:.5f}", r.n_edits]
            )


def _setting_text(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items() if k in ("start", "n_max"))


def plot_scene_frontier(rows: Sequence[SceneRow], path: str | Path, title: str = "") -> None:
    """Per edit kind: fidelity against preservation (feature distance outside the edit) and against realism (FD).

    Point labels give each setting: ``start=`` (sync-SDE, SDEdit, ODE inversion: the step the edit
    begins at, smaller = stronger) or ``n_max=`` (FlowEdit: its active steps, larger = stronger).
    """
    from .plots import _pyplot

    plt = _pyplot()
    kinds = list(dict.fromkeys(r.kind for r in rows))
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.6 * len(kinds), 7.6), squeeze=False)
    methods = list(dict.fromkeys(r.method for r in rows))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for j, kind in enumerate(kinds):
        for i, (xkey, xlabel) in enumerate(
            [
                ("feature_distance", "feature distance outside the edit (↓ better)"),
                ("frechet", "Fréchet distance to real target scenes (↓ better)"),
            ]
        ):
            ax = axes[i, j]
            for m in methods:
                rs = [r for r in rows if r.kind == kind and r.method == m]
                if not rs:
                    continue
                xs, ys = [getattr(r, xkey) for r in rs], [r.fidelity for r in rs]
                ax.plot(xs, ys, "o-", color=colours[m], label=m, ms=4)
                for r, x, y in zip(rs, xs, ys):
                    ax.annotate(_setting_text(r.setting), (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(f"P(target {kind}) (↑ better)", fontsize=8)
            ax.set_title(f"{kind} edits", fontsize=9)
            ax.grid(True, alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle(
        (title + "\n" if title else "")
        + "labels: start = first step (smaller = stronger); n_max = FlowEdit's active steps (larger = stronger)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scene_edits(
    edits: SceneEdits, outputs: dict[str, torch.Tensor], path: str | Path, n_show: int = 6, title: str = ""
) -> None:
    """Rows: source, ground truth, then per method its edit and ``|edit - source|`` (mean over RGB, on a
    fixed 0..0.5 colour scale shown by a colour bar); one column per edit."""
    from .plots import _pyplot

    plt = _pyplot()
    n = min(n_show, len(edits))
    panels: list[tuple[str, torch.Tensor, bool]] = [("source", edits.source, False), ("ground truth", edits.truth, False)]
    for name, out in outputs.items():
        panels += [
            (name, out, False),
            (f"|{name} − source|", ((out.clamp(-1, 1) - edits.source) / 2).abs().mean(1, keepdim=True), True),
        ]
    fig, axes = plt.subplots(len(panels), n, figsize=(1.05 * n + 2.6, 1.05 * len(panels) + 0.4), squeeze=False)
    image = None
    for r, (name, imgs, is_diff) in enumerate(panels):
        for c in range(n):
            ax = axes[r, c]
            if is_diff:
                image = ax.imshow(imgs[c, 0].numpy(), cmap="magma", vmin=0.0, vmax=0.5)
            else:
                ax.imshow(((imgs[c].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.26, right=0.86, top=0.95 if not title else 0.92, bottom=0.02, wspace=0.05, hspace=0.08)
    if title:
        fig.suptitle(title, fontsize=8)
    if image is not None:
        cax = fig.add_axes((0.88, 0.1, 0.02, 0.6))
        cb = fig.colorbar(image, cax=cax)
        cb.set_label("|edit − source|, RGB mean, images on 0..1 (clipped at 0.5)", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    fig.savefig(path, dpi=120)
    plt.close(fig)
