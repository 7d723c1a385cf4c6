"""How a batch manifest stores keys and image digests compactly: a sha256 hex digest as its 32
bytes (a row's several digests joined), anything else as it is (or as JSON). Shared by the
manifest (``visionkit.batch.manifest``) and the upgrade from its first layout
(``visionkit.batch.manifest_v1``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

__all__ = ["pack_images", "pack_key", "unpack_images", "unpack_key"]


def pack_key(key: str | None) -> bytes | str | None:
    """A cache key as stored: a sha256 hex key as its 32 bytes, anything else as it is."""
    if key is not None and len(key) == 64:
        try:
            return bytes.fromhex(key)
        except ValueError:
            pass
    return key


def unpack_key(value: bytes | str | None) -> str | None:
    return value.hex() if isinstance(value, bytes) else value


def pack_images(images: Sequence[str] | None) -> bytes | str | None:
    """Image digests as stored: 32 bytes each, or JSON when one is not a sha256 hex digest."""
    if images is None:
        return None
    packed = [pack_key(d) for d in images]
    if all(isinstance(d, bytes) for d in packed):
        return b"".join(d for d in packed if isinstance(d, bytes))
    return json.dumps(list(images))


def unpack_images(value: bytes | str | None) -> list[str]:
    if isinstance(value, bytes):
        return [value[i : i + 32].hex() for i in range(0, len(value), 32)]
    return json.loads(value) if value else []
