"""The two habits every plot function shares, so they hold everywhere.

``new_axes``: draw on the Axes given, else on a new figure (never ``plt.gca()``, so a plot
never lands on top of an earlier one). ``message``: say why nothing is drawn instead of raising
or leaving an empty frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["message", "new_axes"]


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the Axes of a new ``figsize`` figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def message(ax: Axes, text: str) -> Axes:
    """Say why nothing is drawn, in the middle of the axes; returns them."""
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="0.35",
        fontsize=11,
        gid="visionkit-message",
    )
    return ax
