"""THROWAWAY: stands in for visionkit.encode until the images branch lands. Delete before commit."""

from __future__ import annotations

import base64
import io
import sys
import types

from PIL import Image

from visionkit.profiles import get_provider
from visionkit.sources import read_bytes


def encode_image(
    cell,
    *,
    provider="inference.net",
    max_side=None,
    max_tokens=None,
    max_bytes=None,
    format="auto",
    row=None,
):
    prov = get_provider(provider)
    budget = max_bytes if max_bytes is not None else prov.image_budget()
    side = max_side or prov.max_side
    im = Image.open(io.BytesIO(read_bytes(cell, row=row)))
    im = im.convert("RGB")
    if side and max(im.size) > side:
        im.thumbnail((side, side))
    q = 90
    while True:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        if budget is None or len(uri) <= budget:
            return uri
        if q > 40:
            q -= 15
        else:
            im = im.resize((max(16, im.width * 3 // 4), max(16, im.height * 3 // 4)))
            if im.width <= 16:
                from visionkit.errors import ImageError

                raise ImageError("cannot fit", row=row)


def install():
    try:
        import visionkit.encode  # noqa: F401
    except ImportError:
        mod = types.ModuleType("visionkit.encode")
        mod.encode_image = encode_image
        sys.modules["visionkit.encode"] = mod
