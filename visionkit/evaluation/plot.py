"""The cost/quality frontier of an ``Evaluation``: drawing only (the numbers are its table).

Each configuration is a point at (``x``, ``y``) with its interval as a vertical bar; the Pareto
front (nothing else is both cheaper and better) is joined and its points filled; the human
ceiling, when several people labelled the rows, is a band across the axes (its interval) with
its estimate as a line. Like every plot here it takes ``ax=``, draws on a new figure when it is
``None``, and returns the Axes; extra keyword arguments go to the points' ``ax.scatter``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .._axes import message, new_axes

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["AXIS_LABELS", "plot_frontier"]

AXIS_LABELS = {
    "tokens_per_row": "tokens per row (measured)",
    "prompt_tokens_per_row": "prompt tokens per row (measured)",
    "usd_per_1000": "US dollars per 1,000 rows",
    "latency_median_s": "median latency (s)",
    "latency_p95_s": "95th percentile latency (s)",
    "kappa": "Cohen's kappa with the truth",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
}
CEILING_NAMES = {"kappa": "Fleiss' kappa", "accuracy": "observed agreement"}


class Evaluation(Protocol):
    """What the frontier draws from (``visionkit.evaluation.Evaluation`` has it): the table,
    its interval's confidence, what the truth was, the Pareto front and the human ceiling."""

    table: pd.DataFrame
    source: str
    confidence: float

    def pareto(self, x: str = ..., y: str = ...) -> pd.Series: ...

    def ceiling_for(self, metric: str) -> pd.Series | None: ...


def plot_frontier(
    evaluation: Evaluation,
    *,
    ax: Axes | None = None,
    x: str = "tokens_per_row",
    y: str = "kappa",
    **kwargs: Any,
) -> Axes:
    """See [`Evaluation.plot`][visionkit.Evaluation.plot]."""
    table = evaluation.table
    for name, value in (("x", x), ("y", y)):
        if value not in table.columns:
            numeric = [c for c in table.columns if table[c].dtype.kind in "fiu"]
            raise ValueError(
                f"The value for `{name}` must be one of {numeric}, but {value!r} was passed."
            )
    ax = new_axes(ax, (7.2, 5.0))
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    xs = table[x].to_numpy(dtype=float)
    ys = table[y].to_numpy(dtype=float)
    shown = np.isfinite(xs) & np.isfinite(ys)
    if not shown.any():
        why = "no configuration has both values" if len(table) else "no configurations"
        return message(ax, f"{why}\n({x} against {y})")
    ceiling = evaluation.ceiling_for(y)
    if ceiling is not None and np.isfinite(ceiling["estimate"]):
        name = CEILING_NAMES[y]
        ax.axhspan(
            ceiling["low"],
            ceiling["high"],
            color="tab:green",
            alpha=0.15,
            lw=0,
            label=f"human ceiling: raters' {name}, {evaluation.confidence:.0%} interval",
            zorder=1,
        )
        ax.axhline(ceiling["estimate"], color="tab:green", lw=1, zorder=1)
    front = evaluation.pareto(x, y).to_numpy() & shown
    if f"{y}_low" in table.columns:
        low = table[f"{y}_low"].to_numpy(dtype=float)
        high = table[f"{y}_high"].to_numpy(dtype=float)
        err = np.vstack([np.clip(ys - low, 0, None), np.clip(high - ys, 0, None)])
        ax.errorbar(
            xs[shown],
            ys[shown],
            yerr=err[:, shown],
            fmt="none",
            ecolor="0.45",
            elinewidth=1.2,
            capsize=3,
            zorder=2,
            label=f"{evaluation.confidence:.0%} bootstrap interval",
        )
    style: dict[str, Any] = {"s": 46, "zorder": 4, "edgecolors": "0.15", "linewidths": 0.8}
    style.update(kwargs)
    rest = shown & ~front
    if rest.any():
        ax.scatter(xs[rest], ys[rest], facecolors="white", label="configuration", **style)
    order = np.argsort(xs[front])
    ax.plot(xs[front][order], ys[front][order], color="tab:blue", lw=1.2, zorder=3)
    ax.scatter(xs[front], ys[front], color="tab:blue", label="Pareto front", **style)
    for label, px, py in zip(table.index[shown], xs[shown], ys[shown], strict=True):
        ax.annotate(
            str(label),
            (px, py),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize=8,
            color="0.25",
        )
    ax.margins(x=0.25, y=0.08)  # room for the labels beside the points
    ax.grid(True, color="0.92", lw=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    ax.set_title(
        f"Cost against agreement, {int(table['rows'].max())} rows ({evaluation.source})",
        fontsize=10,
        loc="left",
    )
    return ax
