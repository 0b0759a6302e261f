"""Every editing method at equal model evaluations (18, 28, 48 per edit) on the shipped digits model.

Methods come from the method registry (``coupled_sde.editing.methods()``), plus ODE inversion with each
ODE integrator (Euler, RF-Solver, FireFlow): a method added to the registry joins without an edit
here. For a budget ``B`` each method gets the largest schedule whose *measured* cost (the
``model_evaluations`` its result reports, probed on one edit) is at most ``B``, with the edit window
at the same relative depth for all (the first ``round(4/28 N)`` steps skipped, FLUX's reference
``i0 = 4`` of 28; FlowEdit's ``n_max = N - i0``). RF-Inversion inverts the whole schedule, as
published, and FireFlow's budget of 18 is the paper's 8 + 8 steps. The same held-out digits, target
classes and per-edit seeds for every method; fidelity = the shipped classifier's probability of the
target class (↑), preservation = L1 / L2 pixel distance to the source (pixels 0..16, ↓).

    python benchmarks/matched_budget.py [--n 360] [--budgets 18 28 48] [--out benchmarks/results/matched_budget.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from coupled_sde.backends.base import Condition
from coupled_sde.backends.digits import DigitsBackbone, load_classifier, load_heldout, pixels_to_model
from coupled_sde.editing import edit_latents, methods
from coupled_sde.studies.digits_editing import SOURCE_GUIDANCE, TARGET_GUIDANCE, pick_edits

#: Extra variants of a registered method (ODE inversion's integrators are its editing methods).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "ode-inversion": [{"integrator": "euler"}, {"integrator": "rf-solver"}, {"integrator": "fireflow"}],
}
#: Fraction of the schedule skipped before the edit window (FLUX's i0 = 4 of 28); RF-Inversion inverts fully.
SKIP = 4 / 28
FULL_INVERSION = {"rf-inversion"}
#: Methods whose window is given by ``n_max`` (steps edited) instead of ``start`` (steps skipped).
N_MAX_WINDOW = {"flowedit"}
COLUMNS = ("budget", "method", "settings", "model_calls", "model_evaluations", "fidelity", "l1", "l2", "seconds_per_edit", "n_edits")


def settings_for(method: str, n_steps: int, extra: dict[str, Any], skip_fraction: float = SKIP) -> dict[str, Any]:
    """The settings of ``method`` on an ``n_steps`` schedule at the common relative depth."""
    skip = 0 if method in FULL_INVERSION else max(1, round(skip_fraction * n_steps))
    s: dict[str, Any] = {"n_steps": n_steps, **extra}
    if method in N_MAX_WINDOW:
        s["n_max"] = n_steps - skip
    else:
        s["start"] = skip
    return s


def _edit(backbone: Any, x: torch.Tensor, method: str, src: Condition, tgt: Condition, settings: dict[str, Any], seeds: Any):
    return edit_latents(backbone, x, method, src, tgt, seed=seeds, **settings)


def fit_budget(backbone: Any, x: torch.Tensor, method: str, extra: dict[str, Any], budget: int, skip: float = SKIP, max_steps: int = 400):
    """The largest schedule whose measured cost is at most ``budget`` evaluations: ``(settings, evaluations)``,
    or ``None`` when even the smallest one costs more. Costs are measured (one edit per probe) and
    assumed to grow with the steps; a line through two probes gives the first guess."""
    src, tgt = Condition((0,), SOURCE_GUIDANCE), Condition((1,), TARGET_GUIDANCE)
    memo: dict[int, int | None] = {}

    def cost(n: int) -> int | None:
        if n not in memo:
            try:
                memo[n] = _edit(backbone, x[:1], method, src, tgt, settings_for(method, n, extra, skip), [0]).model_evaluations
            except ValueError:  # a schedule too short for this method's window
                memo[n] = None
        return memo[n]

    def fits(n: int) -> bool:
        c = cost(n)
        return c is not None and c <= budget

    a, b = 8, 16
    ca, cb = cost(a), cost(b)
    n = a if ca is None or cb is None or cb == ca else max(2, a + int((budget - ca) * (b - a) / (cb - ca)))
    n = min(n, max_steps)
    while n > 2 and not fits(n):
        n -= 1
    if not fits(n):
        return None
    while n + 1 <= max_steps and fits(n + 1):
        n += 1
    return settings_for(method, n, extra, skip), cost(n)


def run(
    n: int = 360, budgets: Sequence[int] = (18, 28, 48), seed: int = 0, names: Sequence[str] | None = None, skip: float = SKIP
) -> list[dict[str, Any]]:
    """The matched-budget table as rows (see :data:`COLUMNS`)."""
    backbone, classifier = DigitsBackbone(), load_classifier()
    images, labels = load_heldout()
    x, src_labels, tgt_labels = pick_edits(pixels_to_model(images), labels, n, seed)
    src = Condition(tuple(int(c) for c in src_labels), SOURCE_GUIDANCE)
    tgt = Condition(tuple(int(c) for c in tgt_labels), TARGET_GUIDANCE)
    seeds = [seed + i for i in range(n)]
    rows = []
    for budget in budgets:
        for method in names or list(methods()):
            for extra in VARIANTS.get(method, [{}]):
                fitted = fit_budget(backbone, x, method, extra, budget, skip)
                label = method + "".join(f"[{v}]" for v in extra.values())
                if fitted is None:
                    rows.append({"budget": budget, "method": label, "settings": "does not fit", "n_edits": 0})
                    continue
                settings, _ = fitted
                res = _edit(backbone, x, method, src, tgt, settings, seeds)
                out = res.latents
                with torch.no_grad():
                    prob = torch.softmax(classifier(out.clamp(-1, 1)), -1).gather(1, tgt_labels[:, None])[:, 0]
                d = ((out.clamp(-1, 1) + 1) * 8 - (x.clamp(-1, 1) + 1) * 8).reshape(n, -1)
                shown = {k: v for k, v in settings.items() if v is not None and k not in extra}
                rows.append(
                    {
                        "budget": budget,
                        "method": label,
                        "settings": json.dumps(shown, sort_keys=True),
                        "model_calls": res.model_calls,
                        "model_evaluations": res.model_evaluations,
                        "fidelity": float(prob.mean()),
                        "l1": float(d.abs().mean()),
                        "l2": float(d.pow(2).mean(1).sqrt().mean()),
                        "seconds_per_edit": res.seconds / n,
                        "n_edits": n,
                    }
                )
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = f"{'budget':>6}  {'method':<26}{'settings':<34}{'calls':>6}{'evals':>6}{'fidelity ↑':>11}{'L1 ↓':>8}{'L2 ↓':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r.get("n_edits"):
            lines.append(f"{r['budget']:>6}  {r['method']:<26}{r['settings']}")
            continue
        lines.append(
            f"{r['budget']:>6}  {r['method']:<26}{r['settings']:<34}{r['model_calls']:>6}{r['model_evaluations']:>6}"
            f"{r['fidelity']:>11.3f}{r['l1']:>8.3f}{r['l2']:>8.3f}"
        )
    return "\n".join(lines)


def save(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: (f"{r[c]:.5f}" if isinstance(r.get(c), float) else r.get(c, "")) for c in COLUMNS})
    return p


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=360, help="edits (default: all 360 held-out digits)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[18, 28, 48])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip", type=float, default=SKIP, help="fraction of the schedule skipped before editing (4/28)")
    parser.add_argument("--out", default="benchmarks/results/matched_budget.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = run(args.n, args.budgets, args.seed, skip=args.skip)
    print(
        f"{args.n} held-out digits edited to a random other class, seed {args.seed}, skip {args.skip:.3f} of the schedule "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    print(table(rows))
    print(f"wrote {save(rows, args.out)}")


if __name__ == "__main__":
    main()
