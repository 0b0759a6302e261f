"""Variants of sync-SDE beyond the paper, and the question: does one dominate on every axis?

The variants are configurations of the same method (and so of the same ``solve`` loop):

* the eta-family of reverse SDEs sharing the model's marginals, noise scaled by ``eta``
  (``eta = 0`` the probability-flow ODE, ``eta = 1`` the paper's SDE; here 0 and 0.5), when the
  method offers ``eta``;
* Heun's method instead of Euler--Maruyama (the residual form keeps exact reconstruction);
* the coupling ablations: independent, reflection, correlated (``rho = 0.9``) Brownian motions;
* the exact-variance forward path instead of the reference's midpoint rule.

:func:`dominance_report` answers, per edit kind, whether some variant's points Pareto-dominate every
point of a reference method on fidelity (↑), preservation (feature distance outside the edit, ↓)
and realism (Fréchet distance, ↓).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["variant_settings", "dominates", "dominance_report"]


def variant_settings(
    params: Mapping[str, Any], n_steps: int, active: Sequence[int], exact_path: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Row name -> three settings (the same strengths as the methods) for each variant sync-SDE supports.

    ``exact_path`` adds the exact-variance forward path (it changes nothing measurable in the law of
    edits, see docs/law-of-edits.md, so the scene benchmark leaves it out by default).
    """
    starts = [n_steps - k for k in active]

    def rows(**extra: Any) -> list[dict[str, Any]]:
        return [dict(method="sync-sde", start=s, **extra) for s in starts]

    out: dict[str, list[dict[str, Any]]] = {}
    if "eta" in params:
        for eta in (0.0, 0.5):
            out[f"sync-sde eta={eta:g}"] = rows(eta=eta)
    if "integrator" in params:
        out["sync-sde heun"] = rows(integrator="heun")
    if "coupling" in params:
        out["sync-sde independent"] = rows(coupling="independent")
        out["sync-sde reflection"] = rows(coupling="reflection")
        out["sync-sde rho=0.9"] = rows(coupling=0.9)
    if "forward_rule" in params and exact_path:
        out["sync-sde exact path"] = rows(forward_rule="exact")
    return out


def dominates(a: Any, b: Any) -> bool:
    """Row ``a`` is at least as good as ``b`` on fidelity, feature distance and Fréchet distance, and better on one."""
    ge = a.fidelity >= b.fidelity and a.feature_distance <= b.feature_distance and a.frechet <= b.frechet
    gt = a.fidelity > b.fidelity or a.feature_distance < b.feature_distance or a.frechet < b.frechet
    return ge and gt


def dominance_report(rows: Sequence[Any], references: Sequence[str]) -> str:
    """Per edit kind and candidate: how many of each reference method's points some candidate point dominates."""
    lines = ["Pareto dominance on (fidelity ↑, feature distance ↓, Fréchet ↓): points of each reference dominated"]
    kinds = list(dict.fromkeys(r.kind for r in rows))
    names = list(dict.fromkeys(r.method for r in rows))
    winners = []
    for kind in kinds:
        lines.append(f"[{kind}]")
        for cand in names:
            cs = [r for r in rows if r.kind == kind and r.method == cand]
            parts, all_ref = [], True
            for ref in references:
                if ref == cand:
                    continue
                rs = [r for r in rows if r.kind == kind and r.method == ref]
                hit = sum(any(dominates(c, r) for c in cs) for r in rs)
                parts.append(f"{ref} {hit}/{len(rs)}")
                all_ref &= bool(rs) and hit == len(rs)
            if cand in references:
                all_ref = False
            lines.append(f"  {cand:<24}" + "  ".join(parts) + ("   <- dominates both" if all_ref else ""))
            if all_ref:
                winners.append((kind, cand))
    if winners:
        lines.append("dominating all reference points: " + ", ".join(f"{c} ({k})" for k, c in winners))
    else:
        lines.append("no candidate dominates every point of " + " and ".join(references) + " on any edit kind")
    return "\n".join(lines)
