"""What the plots draw, computed without a figure: token tiers, totals, savings, estimate error.

Pure pandas/numpy (no matplotlib), so every number a plot shows can be tested and reused (the
CLI prints the same summary the token plot puts in its title):

    import visionkit as vk
    from visionkit import costs
    df = vk.read_images("datasets/images/")
    costs.token_summary(df)            # TokenSummary(images=22, tokens=65498, ...)
    costs.token_tiers("inference.net") # TokenTiers(floor_side=560, cap_side=1120, ...)

What "a resize would save" means
--------------------------------
A provider's token estimate is flat at both ends: up to the *floor* every image costs the
minimum (inference.net: 1,601 tokens up to 560 px a side) and past the *cap* it stops growing
(inference.net: 6,404 tokens once both sides reach 1,120 px). ``token_summary`` prices two
downscales (never upscales), each keeping the aspect ratio:

- to the cap: the longest side at most the profile's ``max_side``, which ``encode`` does by
  default. For a square image this is free, but inference.net clamps each side separately, so a
  non-square image loses tokens once its short side drops under 1,120 px: a 1800 x 1197 photo
  costs 6,404 as it is and 4,260 at 1120 x 745. (openai and anthropic downscale to their own
  ``max_side`` themselves, so there this saves bytes, not tokens.)
- to ``resize_to``: by default the provider's floor side (560 px for inference.net), where
  every image costs the minimum; pass another side (say 840) to price a middle ground.
  Providers whose floor is tiny (anthropic: tokens grow from a few pixels) have no default
  target, and no saving is reported unless you pass one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._state import register
from .providers import Price, Provider, get_provider, price_of

__all__ = [
    "EstimateAccuracy",
    "TokenSummary",
    "TokenTiers",
    "estimate_accuracy",
    "fit_sides",
    "image_sizes",
    "token_curve",
    "token_summary",
    "token_surface",
    "token_tiers",
]

# Sides scanned to find a provider's tiers; past this every known provider has stopped growing.
_SCAN_LIMIT = 8192
# A floor smaller than this is not a useful resize target (anthropic's "floor" is ~19 px).
_MIN_USEFUL_FLOOR = 64


@dataclass(frozen=True)
class TokenTiers:
    """Where a provider's token estimate is flat.

    ``floor_side``: the largest side at which a square image still costs ``min_tokens``
    (inference.net: 560). ``cap_side``: the longest side past which the estimate stops growing
    (inference.net: 1120): the profile's ``max_side`` (what ``encode`` downscales to), or, for a
    profile without one, the side from which a square image costs ``max_tokens``; ``None`` if
    the estimate is flat or still growing at 8192 px. ``min_tokens``/``max_tokens`` are the
    least and most one image can cost at any size and aspect ratio up to 8192 px a side: for
    openai's tiles a 2048 x 768 image (1,445) costs more than any square one (765); and every
    number visionkit shows (plots, the TokenExplorer, the CLI) agrees with this one.
    """

    provider: str
    floor_side: int
    cap_side: int | None
    min_tokens: int
    max_tokens: int

    @property
    def boundaries(self) -> tuple[int, ...]:
        """The sides worth marking on a plot: the floor (if useful) and the cap."""
        if self.flat:
            return ()
        marks = []
        if self.floor_side >= _MIN_USEFUL_FLOOR:
            marks.append(self.floor_side)
        if self.cap_side is not None and all(abs(self.cap_side - m) > 1 for m in marks):
            marks.append(self.cap_side)
        return tuple(marks)

    @property
    def flat(self) -> bool:
        """The same tokens at every size (e.g. openai's ``detail="low"``)."""
        return self.min_tokens == self.max_tokens

    @property
    def default_resize_to(self) -> int | None:
        """The floor side, when it is large enough to be a sensible resize target."""
        if self.flat or self.floor_side < _MIN_USEFUL_FLOOR:
            return None
        return self.floor_side


def token_tiers(provider: str | Provider | None = None) -> TokenTiers:
    """Scan ``provider``'s token function along square sizes to find its floor and cap.

    Derived from the token function itself, so registered providers get tiers too.

    >>> token_tiers("inference.net").floor_side, token_tiers("inference.net").cap_side
    (560, 1120)
    """
    profile = get_provider(provider)
    sides = np.arange(1, _SCAN_LIMIT + 1)
    tokens = np.rint(np.asarray(profile.estimate(sides, sides), dtype="float64")).astype("int64")
    lo, hi = int(tokens[0]), int(tokens[-1])
    growing = np.flatnonzero(tokens != lo)
    floor_side = int(sides[growing[0] - 1]) if growing.size else int(sides[-1])
    not_max = np.flatnonzero(tokens != hi)
    if not not_max.size:
        cap_side: int | None = None  # flat: never grows
    elif profile.max_side is not None:
        cap_side = int(profile.max_side)
    elif not_max[-1] + 1 >= len(sides) - 1:
        cap_side = None  # still growing at the end of the scan
    else:
        cap_side = int(sides[not_max[-1] + 1])
    lowest, highest = _extremes(profile)
    return TokenTiers(profile.name, floor_side, cap_side, lowest, highest)


@functools.lru_cache(maxsize=64)
def _extremes(profile: Provider) -> tuple[int, int]:
    """The least and most one image can cost, over every size and aspect ratio on a 16 px grid
    up to ``_SCAN_LIMIT`` a side (plus 1 px), in one vectorised pass (cached per profile)."""
    sides = np.concatenate([[1], np.arange(16, _SCAN_LIMIT + 1, 16)])
    w, h = np.meshgrid(sides, sides)
    tokens = np.rint(np.asarray(profile.estimate(w, h), dtype="float64"))
    return int(tokens.min()), int(tokens.max())


def fit_sides(width: Any, height: Any, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``tokens.fit_within``: sizes downscaled (never up) to ``max_side`` a side."""
    w = np.asarray(width, dtype="float64")
    h = np.asarray(height, dtype="float64")
    longest = np.maximum(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(longest > max_side, max_side / longest, 1.0)
    fw = np.where(scale < 1, np.maximum(1.0, np.floor(w * scale + 0.5)), w)
    fh = np.where(scale < 1, np.maximum(1.0, np.floor(h * scale + 0.5)), h)
    return fw, fh


def image_sizes(data: pd.DataFrame) -> pd.DataFrame:
    """``width`` and ``height`` (float, NaN where unknown) for each row, same index.

    Uses the columns when present (as ``read_images`` gives them), else ``data.vision.inspect()``.
    """
    if {"width", "height"} <= set(data.columns):
        sizes = data
    elif len(data) == 0:
        return pd.DataFrame({"width": [], "height": []}, index=data.index, dtype="float64")
    else:
        sizes = data.vision.inspect()
    w = pd.to_numeric(sizes["width"], errors="coerce").astype("float64")
    h = pd.to_numeric(sizes["height"], errors="coerce").astype("float64")
    bad = ~((w > 0) & (h > 0))
    w[bad] = np.nan
    h[bad] = np.nan
    return pd.DataFrame({"width": w, "height": h}, index=data.index)


@dataclass(frozen=True)
class TokenSummary:
    """Totals for an image set under one provider (the module docstring explains the savings)."""

    provider: str
    images: int  # rows
    sized: int  # rows with a known size
    tokens: int  # estimated total, as the images are
    cap_side: int | None  # the longest side encode() downscales to by default
    tokens_at_cap: int | None  # total after that downscale
    over_cap: int  # images whose longest side is over cap_side
    resize_to: int | None  # the longest side the further saving is priced at
    tokens_resized: int | None  # total if each image were downscaled to ``resize_to``
    model: str | None = None  # the model money is priced for (the provider's default)
    price: Price | None = None  # its price, where known: money is shown beside tokens

    @property
    def cost_usd(self) -> float | None:
        """The image tokens in US dollars at the model's input price (None: price unknown)."""
        return None if self.price is None else self.price.cost(self.tokens)

    @property
    def unsized(self) -> int:
        """Images without a known size (error rows), left out of the sums."""
        return self.images - self.sized

    @property
    def saved_at_cap(self) -> int:
        """Tokens the default downscale to the provider's ``max_side`` saves."""
        return 0 if self.tokens_at_cap is None else self.tokens - self.tokens_at_cap

    @property
    def saved(self) -> int:
        """Tokens the ``resize_to`` downscale would save (0 without it)."""
        return 0 if self.tokens_resized is None else self.tokens - self.tokens_resized

    def _share(self, n: int) -> str:
        return f"{n / self.tokens:.0%}" if self.tokens else "0%"

    def describe(self) -> str:
        """A few lines for a plot title, a CLI footer or a log."""
        noun = "image" if self.sized == 1 else "images"
        head = f"{self.provider}: {self.sized} {noun}, {self.tokens:,} tokens"
        if self.cost_usd is not None:
            head += f" (${self.cost_usd:,.2f} at {self.model}'s input price)"
        if self.unsized:
            head += f" ({self.unsized} without a known size)"
        lines = [head]
        # (anthropic's rounding moves a few tokens when it is scaled: that is no saving)
        if self.over_cap and self.saved_at_cap > 0.005 * self.tokens:
            lines.append(
                f"encode()'s default resize to {self.cap_side} px saves "
                f"{self.saved_at_cap:,} ({self._share(self.saved_at_cap)})"
            )
        elif self.over_cap:
            lines.append(
                f"{self.over_cap} over {self.cap_side} px: encode() shrinks them at no token cost"
            )
        if self.resize_to is not None and self.saved:
            lines.append(
                f"downscaling to {self.resize_to} px would save {self.saved:,} "
                f"({self._share(self.saved)})"
            )
        elif self.resize_to is not None and self.sized:
            lines.append(f"all at or under {self.resize_to} px already: nothing to save")
        return "\n".join(lines)


def token_summary(
    data: pd.DataFrame,
    provider: str | Provider | None = None,
    *,
    resize_to: int | str | None = "floor",
) -> TokenSummary:
    """Total estimated tokens for ``data`` and what downscaling each image would save.

    ``resize_to``: the longest side to price the saving at; ``"floor"`` (default) is the
    provider's floor side (560 px for inference.net), ``None`` reports no saving.
    """
    profile = get_provider(provider)
    tiers = token_tiers(profile)
    sizes = image_sizes(data)
    known = sizes.dropna()
    w, h = known["width"].to_numpy(), known["height"].to_numpy()
    tokens = int(np.asarray(profile.estimate(w, h)).sum()) if len(known) else 0
    if resize_to == "floor":
        resize_to = tiers.default_resize_to
    elif resize_to is not None and (not isinstance(resize_to, int) or resize_to < 1):
        raise ValueError(f"resize_to must be a positive int, 'floor' or None, not {resize_to!r}")

    def total_at(side: int | None) -> int | None:
        if side is None:
            return None
        if not len(known):
            return 0
        rw, rh = fit_sides(w, h, side)
        return int(np.asarray(profile.estimate(rw, rh)).sum())

    cap = tiers.cap_side
    over = int((np.maximum(w, h) > cap).sum()) if cap is not None and len(known) else 0
    return TokenSummary(
        provider=profile.name,
        images=len(data),
        sized=len(known),
        tokens=tokens,
        cap_side=cap,
        tokens_at_cap=total_at(cap),
        over_cap=over,
        resize_to=resize_to,
        tokens_resized=total_at(resize_to),
        model=profile.default_model,
        price=price_of(profile, profile.default_model),
    )


def token_surface(
    provider: str | Provider | None = None, max_px: float = 2400, *, steps: int = 241
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The provider's estimate on a ``steps x steps`` grid of widths and heights up to ``max_px``.

    Returns ``(widths, heights, tokens)`` with ``tokens[i, j]`` the estimate for
    ``widths[j] x heights[i]`` (the layout ``contourf(widths, heights, tokens)`` expects).
    The grid starts at 1 px and always contains the provider's tier boundaries exactly, so the
    edges of the filled map fall where the tiers are.
    """
    profile = get_provider(provider)
    marks = [b for b in token_tiers(profile).boundaries if b < max_px]
    axis = np.unique(np.concatenate([np.linspace(1, max_px, steps), marks]))
    ww, hh = np.meshgrid(axis, axis)
    tokens = np.asarray(profile.estimate(ww, hh), dtype="int64")
    return axis, axis.copy(), tokens


def token_curve(
    provider: str | Provider | None = None, aspect: float = 1.0, *, max_side: int = 2400
) -> pd.DataFrame:
    """Tokens for images of one ``aspect`` (width / height) as the longest side grows.

    One row per longest side from 1 to ``max_side`` px, with the ``width`` and ``height`` of an
    image of exactly that aspect and its ``tokens``. Sizes are not rounded to whole pixels: at
    4:3, rounding makes openai's tile count flicker between neighbouring sides, which would draw
    a band instead of the formula's steps.
    """
    if not aspect > 0:
        raise ValueError(f"aspect must be a positive width / height ratio, not {aspect!r}")
    profile = get_provider(provider)
    side = np.arange(1, int(max_side) + 1, dtype="int64")
    if aspect >= 1:
        width, height = side.astype("float64"), side / aspect
    else:
        width, height = side * aspect, side.astype("float64")
    tokens = np.asarray(profile.estimate(width, height), dtype="int64")
    return pd.DataFrame({"side": side, "width": width, "height": height, "tokens": tokens})


@dataclass(frozen=True)
class EstimateAccuracy:
    """How far the token estimate was from the provider's reported prompt tokens.

    ``rows`` holds the rows where both are known: ``estimated``, ``reported``, and
    ``relative_error = (estimated - reported) / reported`` (negative: the estimate was low).
    Reported prompt tokens include the prompt's text, so a small negative bias is expected.
    """

    rows: pd.DataFrame
    median_relative_error: float  # signed: the typical bias
    median_abs_relative_error: float  # the typical size of the miss

    @property
    def n(self) -> int:
        """How many rows have both an estimate and reported tokens."""
        return len(self.rows)

    def describe(self) -> str:
        """One line on how far the estimates were from the reported tokens."""
        if not self.n:
            return "no rows with both an estimate and reported prompt tokens"
        lean = self.median_relative_error
        if abs(lean) < 0.0005:
            how = "no typical lean"
        else:
            how = f"estimate typically {abs(lean):.1%} {'under' if lean < 0 else 'over'}"
        return f"median error {self.median_abs_relative_error:.1%} ({how}), {self.n} rows"


def estimate_accuracy(
    data: pd.DataFrame,
    *,
    estimated: str = "estimated_tokens",
    reported: str = "prompt_tokens",
) -> EstimateAccuracy:
    """Compare an ``ask`` result's ``estimated_tokens`` with its reported ``prompt_tokens``."""
    missing = [c for c in (estimated, reported) if c not in data.columns]
    if missing:
        raise KeyError(
            f"estimate_accuracy needs columns {estimated!r} and {reported!r} (an ask() result); "
            f"missing {missing}, have {list(data.columns)}"
        )
    est = pd.to_numeric(data[estimated], errors="coerce").astype("float64")
    rep = pd.to_numeric(data[reported], errors="coerce").astype("float64")
    ok = est.notna() & rep.notna() & (rep > 0)
    frame = pd.DataFrame({"estimated": est[ok], "reported": rep[ok]})
    frame["relative_error"] = (frame["estimated"] - frame["reported"]) / frame["reported"]
    if len(frame):
        signed = float(frame["relative_error"].median())
        absolute = float(frame["relative_error"].abs().median())
    else:
        signed = absolute = float("nan")
    return EstimateAccuracy(
        rows=frame, median_relative_error=signed, median_abs_relative_error=absolute
    )


def _held_tiers() -> tuple[int, str]:
    info = _extremes.cache_info()
    return info.currsize, f"{info.currsize} providers scanned"


register("token tiers", __name__, _held_tiers, _extremes.cache_clear)
