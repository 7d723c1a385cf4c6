"""Phone formats: HEIC/HEIF through pillow-heif, AVIF through Pillow itself.

iPhones save HEIC by default and many Android phones and web pipelines AVIF. visionkit reads,
inspects, shows and encodes both like any other format; a provider that does not take them
(inference.net takes png/jpeg/webp/gif) gets a re-encoded JPEG/PNG/WebP, never the HEIC.

- **AVIF** is decoded by Pillow's own plugin (in Pillow's wheels since 11.3; ``features.check
  ("avif")`` says whether this Pillow has it). Nothing to install.
- **HEIC/HEIF** needs ``pip install 'visionkit[heif]'`` (pillow-heif, the maintained libheif
  plugin; ``dev`` includes it). ``ensure_plugins()`` registers its opener with Pillow once, on
  first use, for the whole process (so ``PIL.Image.open`` reads HEIC afterwards too). Without
  it a HEIC row says "unsupported image format 'heic' (install visionkit[heif] to read it)".

Surprises worth knowing, both handled by ``decode.orientation``:

- pillow-heif applies the HEIF transforms (``irot``/``imir``, which an iPhone writes together
  with EXIF orientation 6) while decoding, reports the size *after* them, and rewrites the EXIF
  orientation to 1 (the original is in ``im.info["original_orientation"]``). Rotating again by
  the EXIF tag would turn the photo sideways.
- Pillow's AVIF plugin does the opposite: pixels and size are as stored, and the container's
  ``irot``/``imir`` are reported as the EXIF orientation, for ``ImageOps.exif_transpose``. When
  saving, Pillow moves an EXIF orientation into ``irot``/``imir``.
- Neither format has a draft mode: a 48 MP iPhone HEIC is decoded in full (146 MB of RGB)
  before it is shrunk, where a JPEG of that size decodes at 1/4 scale. ``benchmarks/
  bench_images.py`` measures the cost.
"""

from __future__ import annotations

import threading

from .._state import register

__all__ = ["ensure_plugins", "heif_available"]

_lock = threading.Lock()
_done = False
_heif = False


def ensure_plugins() -> None:
    """Register pillow-heif's HEIC/HEIF opener with Pillow, once, if it is installed."""
    global _done, _heif
    if _done:
        return
    with _lock:
        if _done:
            return
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif = True
        except ImportError:  # the heif extra is not installed: HEIC rows say so
            pass
        _done = True


def heif_available() -> bool:
    """Whether HEIC/HEIF files can be decoded (pillow-heif installed and registered)."""
    ensure_plugins()
    return _heif


def _held_plugins() -> tuple[int, str]:
    return int(_heif), "pillow-heif's HEIC/HEIF opener, registered with Pillow" if _heif else ""


register("Pillow plugins", __name__, _held_plugins)  # Pillow keeps openers for good
