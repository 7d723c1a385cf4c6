"""Awkward image files made with Pillow, for the images tests (no dependency on datasets/)."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image


def photo(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth colour fields plus grain (so JPEG has work to do).

    Built small and upscaled in C, so camera sizes (4000 x 3000) take a fraction of a second.
    """
    rng = np.random.default_rng(seed)
    sw, sh = max(2, width // 16), max(2, height // 16)
    y, x = np.mgrid[0:sh, 0:sw]
    r = 128 + 100 * np.sin(x / sw * 6.0 + seed)
    g = 128 + 100 * np.cos(y / sh * 5.0)
    b = 255 * (x + y) / (sw + sh)
    small = np.stack([r, g, b], axis=-1) + rng.normal(0, 25, (sh, sw, 3))
    base = Image.fromarray(np.clip(small, 0, 255).astype("uint8"), "RGB")
    base = base.resize((width, height), Image.Resampling.BICUBIC)
    grain = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    arr = np.asarray(base, dtype=np.int16) + grain
    return Image.fromarray(np.clip(arr, 0, 255).astype("uint8"), "RGB")


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 400x100 JPEG (left half red, right half blue) with an EXIF orientation tag."""
    im = Image.new("RGB", (400, 100), "red")
    im.paste((0, 0, 255), (200, 0, 400, 100))
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", exif=exif, quality=95)
    return path


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def thin_bombs(folder: Path) -> list[Path]:
    """Tiny PNGs (cut short after a few rows) whose headers claim one column and tens of
    millions of rows: within ``MAX_IMAGE_PIXELS`` by pixels, yet Pillow would allocate a
    pointer per row (671 MB for 1x83,886,338: how fuzzed files in Pillow's own test corpus
    took ~1 GB), and a photo beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = [bomb_png(folder / f"thin{i}.png", 1, 80_000_000 - i) for i in range(3)]
    out.append(save(photo(120, 90), folder / "photo.png"))
    return out


_PHONE_JPEGS: dict[tuple[int, int], Path] = {}


def phone_jpeg(tmp_path_factory, width: int = 12000, height: int = 9000) -> Path:
    """A real ``width x height`` JPEG (108 MP by default: a modern phone's full resolution).

    Left half red, right half blue, low quality: under 2 MB on disk. Made once per session
    (about 0.6 s and a transient 430 MB while Pillow encodes it).
    """
    key = (width, height)
    if key not in _PHONE_JPEGS:
        path = tmp_path_factory.mktemp("phone") / f"phone_{width}x{height}.jpg"
        im = Image.new("RGB", (width, height), (200, 40, 40))
        im.paste((30, 60, 220), (width // 2, 0, width, height))
        im.save(path, "JPEG", quality=10)
        del im
        _PHONE_JPEGS[key] = path
    return _PHONE_JPEGS[key]


def with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF header patched to claim ``width x height`` (the data stays short)."""
    pos = 2
    while jpeg[pos] == 0xFF and jpeg[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    assert jpeg[pos] == 0xFF, "no SOF segment found"
    return jpeg[: pos + 5] + struct.pack(">HH", height, width) + jpeg[pos + 9 :]


def truncated_jpeg(path: Path, size: tuple[int, int] = (600, 400)) -> Path:
    buf = io.BytesIO()
    photo(*size).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def gradient16(width: int = 256, height: int = 64) -> Image.Image:
    """A 16-bit grayscale horizontal gradient from 0 to 65535 (mode I;16)."""
    row = np.linspace(0, 65535, width).astype("<u2")
    arr = np.tile(row, (height, 1))
    im = Image.fromarray(arr)
    assert im.mode == "I;16", im.mode
    return im


def palette_with_transparency() -> Image.Image:
    """A P-mode image: index 0 transparent, index 1 pure red, index 2 pure green."""
    im = Image.new("P", (64, 64), 0)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.paste(1, (0, 0, 32, 64))
    im.paste(2, (32, 32, 64, 64))
    im.info["transparency"] = 0
    return im


def animated_gif(path: Path) -> Path:
    """A three-frame GIF: red, green, blue frames of 80x60."""
    frames = [Image.new("RGB", (80, 60), c) for c in ("red", "lime", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        route(self)


@contextmanager
def serve(routes: dict) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 in a thread; ``routes`` maps path -> handler(req)."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send(req, body: bytes, ctype: str = "image/png", length: bool = True) -> None:
    req.send_response(200)
    req.send_header("Content-Type", ctype)
    if length:
        req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


def stream_forever(req, chunk: bytes = b"\0" * 65536, limit: int = 200 * 65536) -> None:
    """Send a response with no Content-Length that goes on (up to ``limit`` bytes)."""
    req.send_response(200)
    req.send_header("Content-Type", "image/png")
    req.end_headers()
    sent = 0
    try:
        req.wfile.write(b"\x89PNG\r\n\x1a\n")
        while sent < limit:
            req.wfile.write(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


def slow(req, delay: float = 2.0) -> None:
    time.sleep(delay)
    with suppress(BrokenPipeError, ConnectionResetError):
        send(req, b"late")


# ---------------------------------------------------------------------------------------------
# hand-made files Pillow cannot write (or writes only correctly)


def dds_dx10(dxgi_format: int = 2, width: int = 8, height: int = 8) -> bytes:
    """A DDS texture with a DX10 header naming ``dxgi_format`` (2 = R32G32B32A32_FLOAT, which
    Pillow has not implemented: it raises NotImplementedError while opening)."""
    pixel_format = struct.pack("<4I", 32, 0x4, int.from_bytes(b"DX10", "little"), 0)
    pixel_format += b"\0" * 16  # RGBA masks
    header = struct.pack("<3I", 0x1007, height, width) + struct.pack("<3I", 0, 0, 1)
    header += b"\0" * 44 + pixel_format + struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    assert len(header) == 120
    dx10 = struct.pack("<5I", dxgi_format, 3, 0, 1, 0)
    return b"DDS " + struct.pack("<I", 124) + header + dx10 + b"\0" * (width * height * 16)


def layered_psd(
    width: int = 40, height: int = 30, layers: tuple[tuple[int, int, int], ...] = ((255, 0, 0),)
) -> bytes:
    """An RGB Photoshop file with one full-size layer per colour in ``layers``; its merged
    composite is the last layer's colour (what Photoshop would show)."""

    def planes(rgb: tuple[int, int, int]) -> list[bytes]:
        return [bytes([c]) * (width * height) for c in rgb]

    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    records, channel_data = b"", b""
    for i, rgb in enumerate(layers):
        name = f"layer {i}".encode()
        pascal = bytes([len(name)]) + name
        pascal += b"\0" * (-len(pascal) % 4)
        extra = struct.pack(">II", 0, 0) + pascal
        records += struct.pack(">iiii", 0, 0, height, width) + struct.pack(">H", 3)
        for channel in range(3):
            records += struct.pack(">hI", channel, 2 + width * height)
        records += b"8BIMnorm" + bytes([255, 0, 0, 0]) + struct.pack(">I", len(extra)) + extra
        channel_data += b"".join(struct.pack(">H", 0) + p for p in planes(rgb))
    layer_info = struct.pack(">h", len(layers)) + records + channel_data
    layer_info += b"\0" * (len(layer_info) % 2)
    layer_and_mask = struct.pack(">I", len(layer_info)) + layer_info + struct.pack(">I", 0)
    composite = struct.pack(">H", 0) + b"".join(planes(layers[-1]))
    return (
        header
        + struct.pack(">I", 0)  # colour mode data
        + struct.pack(">I", 0)  # image resources
        + struct.pack(">I", len(layer_and_mask))
        + layer_and_mask
        + composite
    )


def apng_with_zero_frames() -> bytes:
    """A three-frame APNG whose acTL chunk is patched to say 0 frames (invalid by the spec:
    strict decoders reject it; Pillow warns and decodes the default image)."""
    frames = [Image.new("RGB", (80, 60), c) for c in ("red", "lime", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    data = bytearray(buf.getvalue())
    at = data.find(b"acTL")
    data[at + 4 : at + 8] = struct.pack(">I", 0)
    data[at + 12 : at + 16] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 12])))
    return bytes(data)


def corrupt_lzw_tiff() -> bytes:
    """An LZW TIFF (decoded by libtiff) whose compressed strips are overwritten with 0xFF:
    libtiff prints "Using code not yet in table" to the C stderr and Pillow raises."""
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, "TIFF", compression="tiff_lzw")
    data = bytearray(buf.getvalue())
    data[200:3000] = b"\xff" * 2800
    return bytes(data)


def icc_profile(size: int) -> bytes:
    """An sRGB ICC profile padded to ``size`` bytes (a tag-table-valid profile whose header
    size field is patched: lcms still reads it, and it travels with every re-encode)."""
    from PIL import ImageCms

    base = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    padded = bytearray(base + b"\0" * max(0, size - len(base)))
    padded[0:4] = struct.pack(">I", len(padded))
    return bytes(padded)


def phone_photo(path: Path, fmt: str = "HEIF", orientation: int = 1, size=(400, 100)) -> Path:
    """A real HEIC (``fmt="HEIF"``, written by pillow-heif) or AVIF (Pillow's own plugin):
    left half red, right half blue, with grain, and an EXIF orientation tag like a phone
    held sideways.

    The two plugins store the orientation differently (see visionkit/images/plugins.py).
    """
    from visionkit.images.plugins import ensure_plugins

    ensure_plugins()
    halves = np.zeros((size[1], size[0], 3), np.uint8)
    halves[:, : size[0] // 2] = (225, 0, 0)
    halves[:, size[0] // 2 :] = (0, 0, 225)
    grain = np.asarray(photo(*size), np.uint8) // 8  # camera noise: a photo, not a graphic
    im = Image.fromarray(halves + grain)
    exif = im.getexif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"  # some EXIF besides the orientation, as a camera writes
    im.save(path, fmt, exif=exif.tobytes(), quality=90)
    return path
