"""Images for the Dask tests (tests/test_dask_*.py): small JPEGs, distinct unless asked."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image


def jpeg(i: int, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size[0] + i % 50, size[1]), ((i * 37) % 256, (i * 11) % 256, 90)).save(
        buf, "JPEG"
    )
    return buf.getvalue()


def image_folder(folder: Path, n: int, *, repeat_every: int | None = None) -> Path:
    """``n`` JPEGs named im0000.jpg...; with ``repeat_every=k`` image i has image i % k's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data = jpeg(i % repeat_every if repeat_every else i)
        (folder / f"im{i:04d}.jpg").write_bytes(data)
    return folder
