"""What the stand-in says about an image: its size, format, named colours and brightness.

``describe_image`` reads the header, and unless ``pixels=False`` a reduced copy of the pixels;
``FactsCache`` keeps recent answers by image digest, since retries resend the same image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..images.formats import image_format, sniff_format
from .rules import ImagePart

__all__ = ["MAX_ANALYSED_PIXELS", "PREFIX", "FactsCache", "ImageFacts", "describe_image"]

PREFIX = "Offline stand-in (describes pixels only)"
"""How every answer of the stand-in begins, so no one takes it for a real model's."""


def _colour_names(rgb: np.ndarray) -> np.ndarray:
    """A colour name per RGB pixel (floats in 0..1), from hue, saturation and value."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    mx = rgb.max(axis=1)
    mn = rgb.min(axis=1)
    delta = mx - mn
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-9), 0.0)
    safe = np.maximum(delta, 1e-9)
    hue = np.where(
        mx == r,
        ((g - b) / safe) % 6,
        np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    hue = hue * 60.0
    names = np.full(len(rgb), "grey", dtype=object)
    chroma = (sat >= 0.2) & (delta >= 0.08)
    bins = [
        (0, 15, "red"),
        (15, 45, "orange"),
        (45, 70, "yellow"),
        (70, 165, "green"),
        (165, 195, "cyan"),
        (195, 255, "blue"),
        (255, 290, "purple"),
        (290, 345, "pink"),
        (345, 361, "red"),
    ]
    for lo, hi, name in bins:
        names[chroma & (hue >= lo) & (hue < hi)] = name
    # Dark or desaturated oranges/reds/yellows read as brown.
    brownish = chroma & (hue >= 8) & (hue < 50) & ((mx < 0.6) | (sat < 0.45) & (mx < 0.8))
    names[brownish] = "brown"
    names[~chroma & (mx >= 0.85)] = "white"
    names[mx < 0.16] = "black"
    return names


@dataclass(frozen=True)
class ImageFacts:
    """What the stand-in can honestly say about one image (``brightness`` None: not analysed)."""

    width: int
    height: int
    format: str
    dominant_colours: tuple[str, ...]
    brightness: str | None
    frames: int = 1
    transparent: bool = False

    def phrase(self) -> str:
        """The facts in words: size, format, frames, colours, brightness."""
        size = f"{self.width}x{self.height}"
        fmt = self.format.upper()
        if self.frames > 1:
            kind = f"a {size} animated {fmt} ({self.frames} frames)"
        else:
            kind = f"a {size} {fmt}"
        if self.brightness is None:
            return f"{kind} (pixels not analysed)"
        if not self.dominant_colours:
            return f"{kind}, fully transparent"
        *rest, last = self.dominant_colours
        colours = f"{', '.join(rest)} and {last}" if rest else last
        extra = ", partly transparent" if self.transparent else ""
        return f"{kind}, mostly {colours}, {self.brightness}{extra}"

    def as_dict(self) -> dict[str, Any]:
        """The facts as JSON-mode fields, with the text description."""
        out = asdict(self)
        out["dominant_colours"] = list(self.dominant_colours)
        out["description"] = f"{PREFIX}: {self.phrase()}."
        return out


MAX_ANALYSED_PIXELS = 40_000_000  # a 1 MB PNG can hold a 20000 x 20000 image; don't decode it


def describe_image(data: bytes, *, pixels: bool = True, sample: int = 64) -> ImageFacts:
    """Size, format, dominant named colours and brightness of an encoded image.

    Decodes a reduced copy (JPEG draft mode) scaled to at most ``sample`` x ``sample`` pixels.
    With ``pixels=False``, or for images above ``MAX_ANALYSED_PIXELS``, only the header is read
    (size, format, frames). Raises an exception when Pillow cannot read the image.
    """
    # Not sources.open_bytes: it applies visionkit's decode limits, and the server must describe
    # whatever the provider would accept. A phone's MPO file is a JPEG (as sent, and as named
    # by image_format) whose extra frames are depth or preview images, not an animation.
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        fmt = image_format(im) or sniff_format(data) or "unknown"
        frames = 1 if fmt == "jpeg" else int(getattr(im, "n_frames", 1) or 1)
        if not pixels or width * height > MAX_ANALYSED_PIXELS:
            return ImageFacts(width, height, fmt, (), None, frames)
        if fmt == "jpeg":
            im.draft("RGB", (sample, sample))
        im.load()
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        small = im.convert("RGBA" if has_alpha else "RGB")
    small.thumbnail((sample, sample), Image.Resampling.BILINEAR)
    arr = np.asarray(small, dtype=np.float32).reshape(-1, 4 if has_alpha else 3) / 255.0
    transparent = False
    if has_alpha:
        opaque = arr[:, 3] >= 0.5
        transparent = bool((~opaque).any())
        arr = arr[opaque, :3]
    if len(arr) == 0:
        return ImageFacts(width, height, fmt, (), "fully transparent", frames, True)
    names = _colour_names(arr)
    counts = Counter(names.tolist())
    total = len(names)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    dominant = [name for name, n in ranked if n / total >= 0.15][:3] or [ranked[0][0]]
    luma = float((arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean())
    brightness = (
        "mostly dark" if luma < 0.3 else "mostly bright" if luma > 0.7 else "medium brightness"
    )
    return ImageFacts(width, height, fmt, tuple(dominant), brightness, frames, transparent)


class FactsCache:
    """A small thread-safe LRU of ImageFacts by image digest (retries resend the same image)."""

    def __init__(self, *, pixels: bool = True, size: int = 1024) -> None:
        self._items: OrderedDict[bytes, ImageFacts] = OrderedDict()
        self._pixels = pixels
        self._size = size
        self._lock = threading.Lock()

    def get(self, part: ImagePart) -> ImageFacts:
        if not part.complete:
            with contextlib.suppress(_NeedsFullImage):
                return self._header_only(part)
        key = hashlib.blake2b(part.full(), digest_size=16).digest()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        facts = describe_image(part.full(), pixels=self._pixels)
        with self._lock:
            self._items[key] = facts
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return facts

    @staticmethod
    def _header_only(part: ImagePart) -> ImageFacts:
        """Facts from the decoded first bytes (GIF frame counts need the whole file)."""
        if part.data[:3] == b"GIF":
            raise _NeedsFullImage
        try:
            return describe_image(part.data, pixels=False)
        except Exception:
            raise _NeedsFullImage from None


class _NeedsFullImage(Exception):
    """The header was not within the decoded prefix."""
