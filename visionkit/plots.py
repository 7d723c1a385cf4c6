"""Token plots: what an image set will cost, how providers compare, how good the estimate was.

Drawing only: the numbers come from [`visionkit.costs`][visionkit.costs]. Every function takes
``ax=`` and returns the Axes, and never calls ``plt.show()``. With ``ax=None`` each one draws on
a *new* figure (not ``plt.gca()``), so two plots in one notebook cell never land on the same
axes and ``plot_tokens``' colourbar never stacks on an old one; pass ``ax=`` to place a plot
in your own layout. Extra keyword arguments go to the main artist (the scatter of images, the
curves):

    import visionkit as vk
    df = vk.read_images("datasets/images/")
    ax = df.vision.plot_tokens()                 # images over the token map, with tiers
    vk.plot_token_curve(aspect=4 / 3)            # providers side by side
    vk.plot_usage(df.vision.ask("Describe."))    # estimate vs reported, after a run
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import costs
from ._axes import message as _message
from ._axes import new_axes as _new_axes
from .providers import Provider, get_provider

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_token_curve", "plot_tokens", "plot_usage"]

TIER_STYLE: dict[str, Any] = {
    "color": "0.2",
    "linestyle": (0, (5, 3)),
    "linewidth": 1.0,
    "zorder": 3,
}


def _extent(sizes: pd.DataFrame, tiers: costs.TokenTiers) -> float:
    """How far the axes reach: past every image and past the last tier boundary."""
    reach = [1.08 * float(np.nanmax(sizes[["width", "height"]].to_numpy()))]
    if tiers.boundaries:
        reach.append(1.3 * max(tiers.boundaries))
    top = max(reach)
    step = 100 if top <= 3000 else 500
    return float(np.ceil(top / step) * step)


def _levels(lo: float, hi: float) -> np.ndarray:
    """Band edges at round numbers between ``lo`` and ``hi``, plus both ends."""
    from matplotlib.ticker import MaxNLocator

    inner = np.asarray(MaxNLocator(nbins=10, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi))
    inner = inner[(inner > lo) & (inner < hi)]
    return np.unique(np.concatenate([[lo], inner, [hi]]))


def _diagonal_positions(profile: Provider, levels: list[float], top: float) -> list:
    """Where each contour level crosses the diagonal width == height (for its label)."""
    side = np.linspace(1, top, 2000)
    tokens = np.asarray(profile.estimate(side, side), dtype="float64")
    spots = []
    for level in levels:
        above = np.flatnonzero(tokens >= level)
        if above.size and above[0] > 0:
            s = float(side[above[0]])
            spots.append((s, s))
    return spots


def _corner_notes(
    ax: Axes, tiers: costs.TokenTiers, xs: np.ndarray, ys: np.ndarray, surface: np.ndarray
) -> None:
    """Name the flat regions where they are flat: the minimum below the floor (both sides), the
    maximum past the cap (both sides). Only drawn when the map really is flat there."""
    note: dict[str, Any] = {"fontsize": 8, "color": "0.15", "zorder": 5}
    top = float(xs[-1])
    if tiers.flat:
        return
    floor = tiers.default_resize_to
    if floor is not None:
        region = surface[np.ix_(ys <= floor, xs <= floor)]
        if region.size and region.min() == region.max() == surface.min():
            text = f"{int(region.min()):,} each\n(the minimum)"
            ax.text(top * 0.01, top * 0.01, text, ha="left", va="bottom", **note)
    cap = tiers.cap_side
    if cap is not None and cap < top:
        region = surface[np.ix_(ys >= cap, xs >= cap)]
        if region.size and region.min() == region.max() == surface.max():
            text = f"{int(region.max()):,} each (the maximum):\ntokens stop growing"
            ax.text(top * 0.99, top * 0.99, text, ha="right", va="top", **note)


def plot_tokens(
    data: pd.DataFrame,
    provider: str | Provider | None = None,
    *,
    resize_to: int | str | None = "floor",
    cmap: Any = "viridis",
    colorbar: bool = True,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Every image as a point at (width, height), coloured by its estimated tokens.

    Behind the points, the provider's token estimate for every size is a filled map, with the
    tier boundaries dashed (560 and 1120 px for inference.net: below 560 every image costs the
    minimum, past 1120 tokens stop growing). The title gives the total and what downscaling to
    ``resize_to`` would save (see [`token_summary`][visionkit.costs.token_summary]). ``data`` needs
    ``width``/``height`` columns (as ``read_images`` gives) or an image column to inspect.
    ``kwargs`` go to ``ax.scatter``.
    """
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    profile = get_provider(provider)
    ax = _new_axes(ax, (7.2, 6.0))
    sizes = costs.image_sizes(data)
    known = sizes.dropna()
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    if known.empty:
        ax.set_title(f"{profile.name}: token estimates by image size")
        what = "no images" if len(data) == 0 else "no images with a known size"
        return _message(ax, f"{what}: nothing to plot")

    summary = costs.token_summary(data, profile, resize_to=resize_to)
    tiers = costs.token_tiers(profile)
    top = _extent(known, tiers)
    xs, ys, surface = costs.token_surface(profile, top)
    tokens = np.asarray(profile.estimate(known["width"].to_numpy(), known["height"].to_numpy()))
    lo = min(int(surface.min()), int(tokens.min()))
    hi = max(int(surface.max()), int(tokens.max()))
    norm = mcolors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    cmap = plt.get_cmap(cmap)

    # The map: soft, so the points stand out; bands at round token counts, lines labelled
    # along the diagonal, where they are easiest to read.
    levels = _levels(float(lo), float(norm.vmax or lo + 1))
    ax.contourf(xs, ys, surface, levels=levels, cmap=cmap, norm=norm, alpha=0.4, zorder=0)
    inner = [v for v in levels[1:-1]]
    if inner:
        lines = ax.contour(
            xs, ys, surface, levels=inner, colors="white", linewidths=0.7, alpha=0.9, zorder=1
        )
        where = _diagonal_positions(profile, inner, top)[::2]
        if where:
            ax.clabel(lines, fmt=lambda v: f"{v:,.0f}", fontsize=7, colors="0.3", manual=where)
    _corner_notes(ax, tiers, xs, ys, surface)

    for side in tiers.boundaries:
        ax.axvline(side, gid=f"tier-{side}", **TIER_STYLE)
        ax.axhline(side, gid=f"tier-{side}", **TIER_STYLE)
        ax.annotate(
            f"{side} px",
            xy=(side, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=8,
            color="0.15",
        )

    style: dict[str, Any] = {"s": 56, "edgecolors": "0.1", "linewidths": 0.8, "zorder": 4}
    style.update(kwargs)
    points = ax.scatter(
        known["width"].to_numpy(),
        known["height"].to_numpy(),
        c=tokens,
        cmap=cmap,
        norm=norm,
        label="images",
        **style,
    )
    if colorbar:
        ax.figure.colorbar(points, ax=ax, label=f"estimated tokens per image ({profile.name})")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_title(summary.describe(), fontsize=10, loc="left")
    return ax


def plot_token_curve(
    providers: Iterable[str | Provider] = ("inference.net", "openai", "anthropic"),
    aspect: float = 1.0,
    *,
    max_side: int | None = None,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Estimated tokens against an image's longest side, one line per provider.

    ``aspect`` is width / height (4/3 for a landscape photo, 0.75 for portrait). ``kwargs`` go
    to every ``ax.plot`` call.
    """
    profiles = [get_provider(p) for p in providers]
    ax = _new_axes(ax, (7.2, 4.5))
    if max_side is None:
        ends = [p.max_side or 0 for p in profiles]
        ends += [max(costs.token_tiers(p).boundaries, default=0) for p in profiles]
        max_side = int(np.ceil(max([1200, *ends]) * 1.15 / 100) * 100)
    for profile in profiles:
        curve = costs.token_curve(profile, aspect, max_side=max_side)
        ax.plot(curve["side"], curve["tokens"], label=profile.name, **kwargs)
    ax.set_xlim(0, max_side)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("longest side (px)")
    ax.set_ylabel("estimated tokens per image")
    shape = "square" if aspect == 1 else f"aspect {aspect:.3g} (width / height)"
    ax.set_title(f"Tokens per image as it grows, {shape}", fontsize=10, loc="left")
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    if profiles:
        ax.legend(title="provider", frameon=False)
    else:
        _message(ax, "no providers given")
    return ax


def plot_usage(data: pd.DataFrame, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Estimated against reported prompt tokens for an ``ask`` result (``data``), with the
    y = x line.

    The title gives the median relative error, so you learn how far to trust the estimate
    for your model. Reported prompt tokens include the text prompt, so points sit a little
    above the line. ``kwargs`` go to ``ax.scatter``.
    """
    fit = costs.estimate_accuracy(data)
    ax = _new_axes(ax, (5.8, 5.4))
    ax.set_xlabel("estimated tokens")
    ax.set_ylabel("reported prompt tokens")
    if not fit.n:
        ax.set_title("Estimated vs reported prompt tokens", fontsize=10, loc="left")
        return _message(ax, "no rows with both an estimate\nand reported prompt tokens")
    frame = fit.rows
    style: dict[str, Any] = {
        "s": 36,
        "alpha": 0.8,
        "edgecolors": "0.1",
        "linewidths": 0.5,
        "zorder": 3,
    }
    style.update(kwargs)
    ax.scatter(frame["estimated"], frame["reported"], label=f"{fit.n} rows", **style)
    top = 1.05 * float(max(frame["estimated"].max(), frame["reported"].max()))
    ax.plot([0, top], [0, top], color="0.4", linestyle="--", linewidth=1, label="y = x", zorder=2)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", frameon=False)
    ax.set_title(f"Estimated vs reported prompt tokens\n{fit.describe()}", fontsize=10, loc="left")
    return ax
