"""Summaries of dataset runs: mean cost and metrics per (method, setting), and the CLIP-vs-LPIPS frontier.

:func:`summarize` reads result files (a folder: all its ``results*.csv``, deduplicated) and returns a
:class:`Table`; :func:`plot_frontier` draws the paper's figure -- one point per (method, setting),
CLIP score (higher = more faithful to the target prompt) against LPIPS (lower = more of the source
preserved), a method's settings joined by a line -- with matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .results import METRIC_COLUMNS, read_run

__all__ = ["Table", "plot_frontier", "summarize", "summarize_pie_bench"]

_MEANS = ("model_calls", "model_evaluations", "seconds", *METRIC_COLUMNS)


@dataclass
class Table:
    """Rows of dicts with fixed columns; ``str(table)`` is an aligned text table."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        cells = [[_fmt(r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write the table as CSV (overwrites: it is derived from the result files)."""
        p = Path(path)
        with open(p, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows({c: "" if r.get(c) is None else r[c] for c in self.columns} for r in self.rows)
        return p


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _mean(values: list[str]) -> float | None:
    numbers = [float(v) for v in values if v not in ("", None)]
    numbers = [x for x in numbers if math.isfinite(x)]
    return sum(numbers) / len(numbers) if numbers else None


def summarize(source: str | os.PathLike) -> Table:
    """Mean model calls, seconds and metrics per (method, settings) over the finished edits.

    ``source`` is a results CSV or a run folder. Columns: ``method``, ``settings`` (JSON), ``edits``
    (finished), ``failed``, then the means of ``model_calls``, ``model_evaluations``, ``seconds``,
    ``clip``, ``lpips``, ``dino``, ``l1`` (``None`` where no value was recorded).
    """
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in read_run(source):
        groups.setdefault((row["method"], row["settings"]), []).append(row)
    table = Table(["method", "settings", "edits", "failed", *_MEANS])
    for (method, settings), rows in sorted(groups.items()):
        ok = [r for r in rows if not r.get("error")]
        entry: dict[str, Any] = {"method": method, "settings": settings, "edits": len(ok), "failed": len(rows) - len(ok)}
        for column in _MEANS:
            entry[column] = _mean([r.get(column, "") for r in ok])
        table.rows.append(entry)
    return table


def _label(settings: str, others: list[str]) -> str:
    """The settings that vary within a method, as ``k=v`` (``default`` for ``{}``)."""
    mine = json.loads(settings)
    if not mine:
        return "default"
    parsed = [json.loads(s) for s in others]
    varying = [k for k in sorted(mine) if len({json.dumps(p.get(k)) for p in parsed}) > 1] or sorted(mine)
    return ", ".join(f"{k}={mine[k]}" for k in varying)


def plot_frontier(source: str | os.PathLike | Table, path: str | os.PathLike, x: str = "lpips", y: str = "clip") -> Path:
    """Plot mean ``y`` against mean ``x`` (default CLIP vs LPIPS), one point per (method, setting).

    ``source`` is a results CSV, a run folder or a :func:`summarize` table. Raises ``ValueError``
    when no (method, setting) has both metrics (run with metrics on).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = source if isinstance(source, Table) else summarize(source)
    points = [r for r in table.rows if r.get(x) is not None and r.get(y) is not None]
    if not points:
        raise ValueError(f"no {y} / {x} values to plot: run with metrics on (--metrics)")
    fig = Figure(figsize=(6.0, 4.5), dpi=120)  # no pyplot: no global backend state, no display needed
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    methods = sorted({r["method"] for r in points})
    for n, method in enumerate(methods):
        mine = sorted((r for r in points if r["method"] == method), key=lambda r: r[x])
        xs, ys = [r[x] for r in mine], [r[y] for r in mine]
        ax.plot(xs, ys, "o-", color=cycle[n % len(cycle)], label=method)
        for r in mine:
            ax.annotate(
                _label(r["settings"], [m["settings"] for m in mine]),
                (r[x], r[y]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel(f"{x.upper()} (lower = closer to the source)" if x == "lpips" else x)
    ax.set_ylabel(f"{y.upper()} score (higher = closer to the target)" if y == "clip" else y)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return p


def summarize_pie_bench(source: str | os.PathLike) -> Table:
    """PIE-Bench's table: mean of every metric per (method, settings, edit type), plus an ``all`` row per (method, settings).

    ``source`` is a ``pie_bench.csv`` (from :func:`coupled_sde.runs.pie_bench.evaluate_pie_bench`) or
    the run folder holding it. NaN entries (empty masks, as the benchmark's script writes them) are
    left out of the means, as PIE-Bench's tables do. Edit types are named as in
    :data:`coupled_sde.runs.pie_bench.EDIT_TYPES`.
    """
    from .pie_bench import EDIT_TYPES, PIE_COLUMNS

    p = Path(source)
    path = p / "pie_bench.csv" if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(f"no PIE-Bench scores at {str(path)!r}: run evaluate_pie_bench first")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    metrics = [c for c in PIE_COLUMNS[5:] if any(r.get(c) not in ("", None) for r in rows)]
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        kind = row.get("edit_type") or ""
        groups.setdefault((row["method"], row["settings"], kind), []).append(row)
        groups.setdefault((row["method"], row["settings"], "all"), []).append(row)
    table = Table(["method", "settings", "edit_type", "edits", *metrics])
    order = {k: i for i, k in enumerate(EDIT_TYPES)}
    for (method, settings, kind), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1], order.get(g[0][2], 99))):
        entry: dict[str, Any] = {
            "method": method,
            "settings": settings,
            "edit_type": kind if kind == "all" else f"{kind} {EDIT_TYPES.get(kind, '')}".strip(),
            "edits": len(members),
        }
        for column in metrics:
            entry[column] = _mean([r.get(column, "") for r in members])
        table.rows.append(entry)
    return table
