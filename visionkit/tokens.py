"""Token estimates from sizes alone (no Pillow, no network): images, and text roughly.

Every function takes ``width`` and ``height`` as scalars or array-likes and is vectorised with
numpy: scalars give an ``int``, arrays give an ``int64`` array of the same shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "TokenCount",
    "anthropic_tokens",
    "fit_within",
    "inference_net_tokens",
    "openai_tokens",
    "text_tokens",
]

TokenCount = int | np.ndarray
"""An estimate: an ``int`` for a scalar size, an ``int64`` array for array-likes."""

INFERENCE_NET_TILE = 560
INFERENCE_NET_BASE = 1601


def _arrays(width: Any, height: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    scalar = np.ndim(width) == 0 and np.ndim(height) == 0
    w = np.asarray(width, dtype="float64")
    h = np.asarray(height, dtype="float64")
    return w, h, scalar


def _result(values: np.ndarray, scalar: bool) -> TokenCount:
    out = np.rint(values).astype("int64")
    return int(out) if scalar else out


def inference_net_tokens(width: Any, height: Any) -> TokenCount:
    """inference.net's estimate: ``clamp(H/560, 1, 2) * clamp(W/560, 1, 2) * 1601``, rounded.

    Source: the provider's vision guide (docs.inference.net, "Token Usage"). The formula printed
    there reads ``max(2, min(1, H/560))``, which has ``min`` and ``max`` swapped and would always
    give 6,404; its prose ("clamped between 1 and 2") and its table (32 px and 560 px give 1,601,
    1120 px gives 6,404) agree with the clamp implemented here.

    >>> inference_net_tokens(560, 1120)
    3202
    """
    if type(width) is int and type(height) is int:  # one image: the same sums without numpy
        sw = min(max(width / INFERENCE_NET_TILE, 1.0), 2.0)
        sh = min(max(height / INFERENCE_NET_TILE, 1.0), 2.0)
        return round(sw * sh * INFERENCE_NET_BASE)  # half to even, as np.rint
    w, h, scalar = _arrays(width, height)
    fw = np.clip(w / INFERENCE_NET_TILE, 1.0, 2.0)
    fh = np.clip(h / INFERENCE_NET_TILE, 1.0, 2.0)
    return _result(fw * fh * INFERENCE_NET_BASE, scalar)


def openai_tokens(width: Any, height: Any, *, detail: str = "high") -> TokenCount:
    """OpenAI's tile formula for GPT-4o-class models (``detail="high"`` or ``"low"``).

    Source: platform.openai.com/docs/guides/images-vision, "Calculating costs" (GPT-4o, GPT-4.1,
    GPT-4.5, o-series): low detail costs 85 tokens; high detail first fits the image in
    2048 x 2048, then scales it so its shortest side is at most 768 px, then charges 170 tokens
    per 512 px tile plus 85. Downscaling only: small images are not enlarged. (Newer "patch"
    models such as gpt-4.1-mini are billed differently; register your own profile for those.)
    """
    if detail not in ("high", "low", "auto"):
        raise ValueError(
            f"detail must be one of ['high', 'low', 'auto'], but {detail!r} was passed"
        )
    w, h, scalar = _arrays(width, height)
    if detail == "low":
        return _result(np.full(np.broadcast(w, h).shape, 85.0), scalar)
    w, h = np.broadcast_arrays(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        s1 = np.minimum(1.0, 2048.0 / np.maximum(np.maximum(w, h), 1.0))
        w1, h1 = w * s1, h * s1
        s2 = np.minimum(1.0, 768.0 / np.maximum(np.minimum(w1, h1), 1.0))
    w2, h2 = w1 * s2, h1 * s2
    tiles = np.ceil(w2 / 512.0) * np.ceil(h2 / 512.0)
    return _result(tiles * 170.0 + 85.0, scalar)


ANTHROPIC_MAX_EDGE = 1568
ANTHROPIC_MAX_PIXELS = 1_150_000  # ~1,600 tokens * 750 px per token, per the docs' size table


def anthropic_tokens(width: Any, height: Any) -> TokenCount:
    """Anthropic's estimate: ``width * height / 750`` after its own downscaling rule.

    Source: docs.anthropic.com/en/docs/build-with-claude/vision, "Evaluate image size": images
    whose long edge exceeds 1568 px, or that exceed about 1,600 tokens (~1.15 megapixels), are
    scaled down, keeping the aspect ratio, until they fit; then tokens = (width * height) / 750.
    """
    w, h, scalar = _arrays(width, height)
    w, h = np.broadcast_arrays(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = np.minimum(1.0, ANTHROPIC_MAX_EDGE / np.maximum(np.maximum(w, h), 1.0))
        area = np.minimum(1.0, np.sqrt(ANTHROPIC_MAX_PIXELS / np.maximum(w * h, 1.0)))
    s = np.minimum(edge, area)
    return _result(np.floor(w * s) * np.floor(h * s) / 750.0, scalar)


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size of ``width x height`` scaled down (never up) so its longest side is ``max_side``."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    s = max_side / longest
    return max(1, math.floor(width * s + 0.5)), max(1, math.floor(height * s + 0.5))


def text_tokens(*texts: str | None) -> int:
    """A rough token count for text: 4 characters per token (the usual English average)."""
    return sum(math.ceil(len(t) / 4) for t in texts if t)
