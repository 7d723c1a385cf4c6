"""Agreement figures: drawing only (the numbers come from agreement, reliability and boxes).

Every function takes ``ax=`` and returns the Axes; with ``ax=None`` it draws on a new figure,
never on ``plt.gca()``, so a plot never lands on top of an earlier one:

    vk.plot_agreement(vk.agreement(df, truth="label", answer="answer"))  # confusion table
    vk.plot_rater_agreement(vk.rater_agreement(wide))                    # pairwise kappa
    vk.plot_class_agreement(vk.rater_agreement(wide))                    # per label
    vk.plot_box_agreement(vk.box_agreement(df, truth="ann", answer="bob"))  # P/R vs IoU
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._axes import message as _message
from .._axes import new_axes as _new_axes
from .agreement import Agreement, Match, agreement
from .boxes import BoxAgreement
from .reliability import RaterAgreement, rater_agreement

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_agreement", "plot_box_agreement", "plot_class_agreement", "plot_rater_agreement"]


def _heatmap(ax: Axes, table: pd.DataFrame, fmt: str, cmap: str, **kwargs: Any) -> None:
    import matplotlib.pyplot as plt

    values = table.to_numpy(dtype=float)
    kwargs.setdefault("aspect", "auto")
    image = ax.imshow(values, cmap=cmap, **kwargs)
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns], rotation=45, ha="right")
    ax.set_yticks(range(values.shape[0]), [str(r) for r in table.index])
    lo, hi = image.get_clim()
    for (i, j), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        dark = hi > lo and (value - lo) / (hi - lo) > 0.5
        ax.text(
            j,
            i,
            format(value, fmt),
            ha="center",
            va="center",
            fontsize=9,
            color="white" if dark else "black",
        )
    for k in range(min(values.shape)):  # outline the diagonal: where they agree
        ax.add_patch(
            plt.Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, lw=1.2, edgecolor="#e07b00")
        )


def plot_agreement(
    data: pd.DataFrame | Agreement | None = None,
    *,
    truth: str = "label",
    answer: str = "answer",
    match: Match = "exact",
    ax: Axes | None = None,
    cmap: str = "Blues",
    **kwargs: Any,
) -> Axes:
    """The confusion table of [`agreement`][visionkit.agreement] (truth down, answer across), counts
    in each cell, the diagonal outlined. ``data`` is a DataFrame or an ``Agreement``; extra
    keyword arguments go to ``ax.imshow``."""
    if data is None:
        return _message(_new_axes(ax, (4.5, 3.5)), "agreement: no data")
    result = (
        data
        if isinstance(data, Agreement)
        else agreement(data, truth=truth, answer=answer, match=match)
    )
    table = result.confusion
    ax = _new_axes(ax, (1.6 + 0.55 * table.shape[1], 1.4 + 0.45 * max(table.shape[0], 1)))
    if table.empty:
        ax.set_title("agreement: nothing to compare")
        return ax
    _heatmap(ax, table, "g", cmap, **kwargs)
    ax.set_xlabel("answer" if result.answer == "answer" else f"answer ({result.answer})")
    ax.set_ylabel("truth" if result.truth == "truth" else f"truth ({result.truth})")
    ax.set_title(
        f"agreement {result.rate:.0%}, kappa {result.kappa:.2f} (n={result.n}"
        + (f", {result.missing} missing)" if result.missing else ")")
    )
    return ax


def _rater_result(data: pd.DataFrame | RaterAgreement) -> RaterAgreement:
    return data if isinstance(data, RaterAgreement) else rater_agreement(data)


def plot_rater_agreement(
    data: pd.DataFrame | RaterAgreement,
    *,
    statistic: str = "kappa",
    ax: Axes | None = None,
    cmap: str = "RdYlGn",
    **kwargs: Any,
) -> Axes:
    """Cohen's kappa (or ``statistic="agreement"``, the raw share) of every pair of raters as
    a symmetric heatmap, with alpha and Fleiss' kappa in the title. ``data`` is a wide
    DataFrame (one column per rater) or a ``RaterAgreement``."""
    if statistic not in ("kappa", "agreement"):
        raise ValueError(f"statistic must be one of ['kappa', 'agreement'], not {statistic!r}")
    result = _rater_result(data)
    raters = result.raters
    ax = _new_axes(ax, (1.8 + 0.8 * len(raters), 1.4 + 0.6 * len(raters)))
    table = pd.DataFrame(np.nan, index=raters, columns=raters)
    for row in result.pairwise.itertuples(index=False):
        value = getattr(row, statistic)
        table.loc[row.rater_a, row.rater_b] = table.loc[row.rater_b, row.rater_a] = value
    for r in raters:
        table.loc[r, r] = 1.0
    kwargs.setdefault("vmin", -1 if statistic == "kappa" else 0)
    kwargs.setdefault("vmax", 1)
    _heatmap(ax, table, ".2f", cmap, **kwargs)
    ax.set_title(
        f"{'Cohen' + chr(8217) + 's kappa' if statistic == 'kappa' else 'agreement'} by pair\n"
        f"alpha {result.alpha:.2f} ({result.items} items), "
        f"Fleiss {result.fleiss_kappa:.2f} ({result.n_complete} complete)",
        fontsize=10,
    )
    return ax


def plot_class_agreement(
    data: pd.DataFrame | RaterAgreement | Agreement,
    *,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Per label: Fleiss' kappa_j and one-vs-rest alpha (for a ``RaterAgreement`` or a wide
    DataFrame), or kappa_j of truth vs answer (for an ``Agreement``), as horizontal bars.
    Extra keyword arguments go to ``ax.barh``."""
    if isinstance(data, Agreement):
        table = data.per_class if data.per_class is not None else pd.DataFrame()
        columns = ["fleiss_kappa"]
    else:
        table = _rater_result(data).per_class
        columns = ["fleiss_kappa", "alpha"]
    ax = _new_axes(ax, (5.5, 1.2 + 0.45 * max(len(table), 1)))
    if table.empty:
        return _message(ax, "no labels to compare")
    y = np.arange(len(table))
    height = 0.8 / len(columns)
    names = {"fleiss_kappa": "Fleiss' kappa", "alpha": "Krippendorff's alpha (vs rest)"}
    for k, column in enumerate(columns):
        ax.barh(
            y + (k - (len(columns) - 1) / 2) * height,
            table[column].fillna(0),
            height,
            label=names[column],
            **kwargs,
        )
    ax.set_yticks(y, [str(i) for i in table.index])
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlim(min(-0.1, float(np.nanmin(table[columns].to_numpy(dtype=float))) - 0.05), 1.0)
    ax.set_xlabel("agreement beyond chance (1 = perfect, 0 = chance)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    ax.set_title("agreement per label", fontsize=10)
    return ax


def plot_box_agreement(
    data: BoxAgreement,
    *,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Precision and recall of [`box_agreement`][visionkit.box_agreement] against the IoU
    threshold, with the chosen threshold marked. Extra keyword arguments go to both
    ``ax.plot`` lines."""
    if not isinstance(data, BoxAgreement):
        raise TypeError(f"plot_box_agreement needs a BoxAgreement, not {type(data).__name__}")
    ax = _new_axes(ax, (5.0, 3.4))
    curve = data.curve
    if not data.truth_boxes and not data.answer_boxes:
        return _message(ax, "no boxes to compare")
    label = f"precision ({data.answer})"
    ax.plot(curve["iou"], curve["precision"], marker=".", label=label, **kwargs)
    ax.plot(curve["iou"], curve["recall"], marker=".", label=f"recall (of {data.truth})", **kwargs)
    ax.axvline(data.iou, color="0.4", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("IoU threshold for a match")
    ax.set_ylabel("share of boxes")
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    ax.set_title(
        f"{data.answer} vs {data.truth}: P {data.precision:.2f}, R {data.recall:.2f} "
        f"at IoU {data.iou:g}",
        fontsize=10,
    )
    return ax
