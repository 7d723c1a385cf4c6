"""visionkit.images (cells, decode, bombs, formats): every kind of image cell, every failure."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from image_factory import (
    bomb_png,
    corrupt_lzw_tiff,
    dds_dx10,
    layered_psd,
    photo,
    png_bytes,
    send,
    serve,
    slow,
    stream_forever,
    truncated_jpeg,
    with_declared_size,
)
from PIL import Image

from visionkit import ImageError
from visionkit.images.bombs import MAX_JPEG_PIXELS, decode_refusal, jpeg_draft_scale
from visionkit.images.cells import decode_data_uri, read_bytes
from visionkit.images.decode import decode_image, frame_count, open_header, open_image
from visionkit.images.formats import header_size, sniff_format


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.png"
    Image.new("RGB", (30, 20), "red").save(path)
    return path


def test_open_image_is_lazy_for_paths_and_reads_the_header(png_file):
    im = open_image(png_file)
    assert im.size == (30, 20)
    assert im.format == "PNG"
    assert im._im is None  # not decoded
    im.close()


@pytest.mark.parametrize("as_str", [True, False])
def test_read_bytes_from_a_path(png_file, as_str):
    cell = str(png_file) if as_str else png_file
    assert read_bytes(cell) == png_file.read_bytes()


def test_every_cell_kind_gives_the_same_image(png_file):
    data = png_file.read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    pil = Image.open(png_file)
    for cell in (str(png_file), png_file, data, bytearray(data), uri, pil):
        im = open_image(cell)
        assert im.size == (30, 20)
        assert im.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_pil_image_is_returned_as_is_and_saved_as_png_bytes():
    im = Image.new("RGBA", (5, 5), (1, 2, 3, 4))
    assert open_image(im) is im
    data = read_bytes(im)
    assert sniff_format(data) == "png"
    assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (1, 2, 3, 4)


def test_decode_data_uri_roundtrip_and_percent_encoding():
    mime, data = decode_data_uri("data:image/png;base64," + base64.b64encode(b"abc").decode())
    assert (mime, data) == ("image/png", b"abc")
    assert decode_data_uri("data:text/plain,hello%20world") == ("text/plain", b"hello world")
    with pytest.raises(ImageError, match="bad base64"):
        decode_data_uri("data:image/png;base64,@@@@")
    with pytest.raises(ImageError, match="no comma"):
        decode_data_uri("data:image/png;base64")


def test_data_uri_that_is_not_an_image_is_refused():
    with pytest.raises(ImageError, match="not an image"):
        read_bytes("data:text/plain,hello", row=3)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p, "file not found"),
        (lambda p: (p.write_bytes(b""), p)[1], r"empty file \(0 bytes\)"),
        (lambda p: (p.write_text("just some notes\n"), p)[1], r"not an image \(looks like text\)"),
        (lambda p: (p.write_bytes(b"%PDF-1.7\n%\xe2\xe3"), p)[1], r"looks like a PDF"),
        (lambda p: (p.write_text("<!DOCTYPE html><html>"), p)[1], r"looks like HTML"),
        (bomb_png, r"decompression bomb: 20000x20000 = 400 MP exceeds the 89 MP limit"),
    ],
    ids=["missing", "empty", "text", "pdf", "html", "bomb"],
)
def test_open_image_errors_name_the_row_and_reason(tmp_path, make, reason):
    path = make(tmp_path / "bad.jpg")
    with pytest.raises(ImageError, match=reason) as info:
        open_image(path, row="r7")
    assert info.value.row == "r7"
    assert str(info.value).startswith("row 'r7': ")
    assert info.value.source == str(path)


def test_bomb_in_memory_is_refused_without_allocating(tmp_path):
    data = bomb_png(tmp_path / "b.png", 30000, 30000).read_bytes()
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(data)


def test_bomb_between_pillow_warning_and_error_limits_is_an_error_not_a_warning(tmp_path):
    # 10000 x 10000 = 100 MP: Pillow would only *warn* (89 MP < 100 MP < 179 MP).
    data = bomb_png(tmp_path / "b.png", 10000, 10000).read_bytes()
    with pytest.raises(ImageError, match=r"10000x10000 = 100 MP exceeds"):
        open_image(data)


def test_bomb_is_refused_before_pillow_allocates_anything(tmp_path):
    data = bomb_png(tmp_path / "b.png", 30000, 30000).read_bytes()
    before = Image.core.get_stats()["new_count"]  # Pillow's count of image buffers created
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(data)
    assert Image.core.get_stats()["new_count"] == before


# --- big JPEGs: allocation, not declared size ---------------------------------------------------


def small_jpeg(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    photo(*size).save(buf, "JPEG", quality=80)
    return buf.getvalue()


@pytest.mark.parametrize(
    "target",
    [(1120, 840), (800, 600), (400, 300), (201, 150), (200, 150), (199, 149), (100, 75),
     (99, 75), (1599, 1199), (1600, 1200), (1601, 1200), (3, 1000), (1000, 3), (1, 1)],
)  # fmt: skip
def test_jpeg_draft_scale_matches_what_pillows_draft_does(target):
    data = small_jpeg((1601, 1203))  # odd sizes: the scaled size rounds up
    im = Image.open(io.BytesIO(data))
    scale = jpeg_draft_scale(im.size, target)
    _mode, box = im.draft("RGB", target)
    assert box == (0, 0, 1601 / scale, 1203 / scale)
    assert im.size == (-(-1601 // scale), -(-1203 // scale))
    im.load()
    assert im.size == (-(-1601 // scale), -(-1203 // scale))


@pytest.mark.parametrize(
    ("width", "height"), [(12000, 9000), (16320, 12240)], ids=["108MP", "200MP"]
)
def test_phone_size_jpeg_header_opens_without_error(width, height):
    # 200 MP is over twice the limit, where Pillow's own Image.open refuses outright.
    data = with_declared_size(small_jpeg(), width, height)
    assert open_image(data).size == (width, height)


def test_jpeg_over_the_sanity_cap_is_refused_but_its_header_still_reads():
    data = with_declared_size(small_jpeg(), 40000, 30000)  # 1.2 GP
    assert MAX_JPEG_PIXELS < 40000 * 30000
    with pytest.raises(ImageError, match=r"40000x30000 = 1200 MP JPEG exceeds the 1000 MP cap"):
        open_image(data, row=3)
    assert open_header(data).size == (40000, 30000)  # headers allocate nothing


def test_non_jpeg_formats_over_the_limit_stay_errors(tmp_path):
    data = bomb_png(tmp_path / "b.png", 12000, 9000).read_bytes()  # the phone photo's size
    with pytest.raises(ImageError, match=r"12000x9000 = 108 MP exceeds the 89 MP limit"):
        open_image(data)
    assert open_header(data).size == (12000, 9000)


def test_decode_refusal_follows_the_users_max_image_pixels(monkeypatch):
    size = (12000, 9000)
    assert decode_refusal(size, "jpeg", (1500, 1125)) is None  # 1/8 scale: 1.7 MP
    reason = decode_refusal(size, "jpeg", size)
    assert reason.startswith("decompression bomb: 12000x9000 = 108 MP exceeds the 89 MP limit")
    assert "1/2 scale (draft mode) for a target of at most 6000 px a side" in reason
    assert decode_refusal(size, "png") is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000_000)  # raised: a full decode is fine
    assert decode_refusal(size, "png") is None
    assert decode_refusal(size, "jpeg", size) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # switched off: anything goes
    assert decode_refusal((60000, 60000), "png") is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # lowered: 1/8 is 1.7 MP > 1 MP
    assert "even decoded at 1/8 scale" in decode_refusal(size, "jpeg")
    assert decode_refusal((4000, 3000), "jpeg", (1000, 750)) is None  # 12 MP at 1/4: 0.75 MP
    assert "at 2000x1500 = 3.0 MP" in decode_refusal((4000, 3000), "jpeg", (2000, 1500))


def test_truncated_jpeg_fails_on_load_with_a_clear_reason(tmp_path):
    from visionkit.images.pil_errors import pil_errors

    path = truncated_jpeg(tmp_path / "t.jpg")
    im = open_image(path)  # the header is intact
    with pytest.raises(ImageError, match="truncated JPEG"), pil_errors(row=1) as ctx:
        ctx.format = "jpeg"
        im.load()


def test_directory_and_unknown_cell_types():
    with pytest.raises(ImageError, match="directory"):
        read_bytes(Path(__file__).parent)
    with pytest.raises(ImageError, match="unsupported image cell of type int"):
        read_bytes(42, row=0)
    with pytest.raises(ImageError, match="missing value"):
        read_bytes(None, row=0)


def test_sniff_format_knows_the_common_formats():
    buf = {}
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"):
        b = io.BytesIO()
        Image.new("RGB", (4, 4)).save(b, fmt)
        buf[fmt.lower()] = b.getvalue()
    for name, data in buf.items():
        assert sniff_format(data[:32]) == name
    assert sniff_format(b"hello") is None


# --- URLs, against a server on 127.0.0.1 -----------------------------------------------------


@pytest.fixture(scope="module")
def server():
    body = png_bytes(photo(50, 40))
    routes = {
        "/ok.png": lambda req: send(req, body),
        "/nolength.png": lambda req: send(req, body, length=False),
        "/huge-declared.png": lambda req: send(req, b"\0" * 300_000),
        "/endless.png": stream_forever,
        "/slow.png": slow,
        "/empty.png": lambda req: send(req, b""),
    }
    with serve(routes) as base:
        yield base, body


def test_url_download(server):
    base, body = server
    assert read_bytes(f"{base}/ok.png") == body
    assert read_bytes(f"{base}/nolength.png") == body
    assert open_image(f"{base}/ok.png").size == (50, 40)


def test_url_http_error(server):
    base, _ = server
    with pytest.raises(ImageError, match="download failed: HTTP 404") as info:
        read_bytes(f"{base}/nope.png", row=5)
    assert info.value.row == 5


def test_url_size_cap_by_header_and_while_streaming(server):
    base, _ = server
    with pytest.raises(ImageError, match="download over the 100,000 bytes cap"):
        read_bytes(f"{base}/huge-declared.png", max_bytes=100_000)
    with pytest.raises(ImageError, match="download over the 1 MB cap"):
        read_bytes(f"{base}/endless.png", max_bytes=1024 * 1024)


def test_url_timeout(server):
    base, _ = server
    with pytest.raises(ImageError, match="timed out"):
        read_bytes(f"{base}/slow.png", timeout=0.3)


def test_url_empty_body(server):
    base, _ = server
    with pytest.raises(ImageError, match="empty"):
        read_bytes(f"{base}/empty.png")


def test_unreachable_url():
    with pytest.raises(ImageError, match="download failed"):
        read_bytes("http://127.0.0.1:9/x.png", timeout=2)


def _saved(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _header_cases() -> list[tuple[str, bytes]]:
    noise = Image.effect_noise((701, 333), 60).convert("RGB")
    rgba = noise.convert("RGBA")
    rgba.putalpha(128)
    frames = [noise, noise.rotate(90, expand=False)]
    return [
        ("png", _saved(noise, "PNG")),
        ("png palette", _saved(noise.convert("P"), "PNG")),
        ("gif", _saved(noise.convert("P"), "GIF")),
        ("gif animated", _saved(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("jpeg", _saved(noise, "JPEG")),
        ("jpeg progressive", _saved(noise, "JPEG", progressive=True)),
        ("jpeg grey + exif", _saved(noise.convert("L"), "JPEG", exif=b"Exif\0\0" + b"\0" * 60)),
        ("webp lossy (VP8)", _saved(noise, "WEBP", quality=80)),
        ("webp lossless (VP8L)", _saved(noise, "WEBP", lossless=True)),
        ("webp alpha (VP8X)", _saved(rgba, "WEBP", quality=80)),
        ("webp animated", _saved(frames[0], "WEBP", save_all=True, append_images=frames[1:])),
        ("webp max size", _saved(Image.new("RGB", (16383, 3)), "WEBP", lossless=True)),
    ]


@pytest.mark.parametrize(
    ("kind", "data"), _header_cases(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_header_size_matches_pillow_from_the_first_bytes(kind, data):
    with Image.open(io.BytesIO(data)) as im:
        expected = im.size
    assert header_size(data) == expected
    # PNG, GIF and WebP need 30 bytes; Pillow cannot open a WebP cut short at all
    if not kind.startswith("jpeg"):
        assert header_size(data[:30]) == expected


def test_header_size_of_jpeg_needs_its_frame_header():
    data = _saved(Image.new("RGB", (40, 30)), "JPEG", comment=b"x" * 5000)
    assert header_size(data) == (40, 30)
    assert header_size(data[:1000]) is None  # ends inside the comment: read more
    for junk in (b"", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8 ", b"\xff\xd8\xff\xda", b"BM" + b"\0" * 40):
        assert header_size(junk) is None


def test_header_size_of_the_bundled_datasets():
    root = Path(__file__).resolve().parents[1] / "datasets" / "images"
    for path in sorted(root.iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".gif", ".webp"):
            continue
        with Image.open(path) as im:
            assert header_size(path.read_bytes()[:65536]) == im.size, path.name


def test_image_column_rule_is_shared_by_accessor_ask_and_widgets():
    import pandas as pd

    from visionkit.images.cells import find_image_column as image_column

    both = pd.DataFrame({"path": ["a.png"], "image": [b"x"]})
    assert image_column(both) == "image"
    assert image_column(both.drop(columns="image")) == "path"
    assert image_column(both, "path") == "path"
    with pytest.raises(KeyError, match="ask: no column 'nope'"):
        image_column(both, "nope", who="ask")
    with pytest.raises(KeyError, match="needs an image column"):
        pd.DataFrame({"x": [1]}).vision.estimate_tokens()


# --- every exception is the row's error (issue 8) -------------------------------------------------


def test_dds_in_an_unimplemented_dxgi_format_is_the_rows_error_with_its_cause(tmp_path):
    path = tmp_path / "texture.dds"
    path.write_bytes(dds_dx10(dxgi_format=2))
    with pytest.raises(ImageError) as info:
        open_image(path, row=4)
    assert info.value.row == 4
    assert info.value.reason == "unsupported DDS variant (Unimplemented DXGI format 2)"
    assert isinstance(info.value.__cause__, NotImplementedError)  # the cause is kept
    with pytest.raises(ImageError, match="unsupported DDS variant"):
        open_image(path.read_bytes())


def test_any_exception_from_a_plugin_becomes_an_image_error(monkeypatch, png_file):
    from PIL import PngImagePlugin

    def broken(self):
        raise RuntimeError("plugin bug")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", broken)
    with pytest.raises(ImageError, match=r"cannot read PNG: RuntimeError: plugin bug") as info:
        open_image(png_file, row="x")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_keyboard_interrupt_is_never_swallowed(monkeypatch, png_file):
    from PIL import PngImagePlugin

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_image(png_file)


def test_layered_psd_decodes_to_its_composite_and_counts_one_frame(tmp_path):
    path = tmp_path / "layers.psd"
    path.write_bytes(layered_psd(layers=((255, 0, 0), (0, 255, 0), (0, 0, 255))))
    with open_image(path) as im:
        assert im.format == "PSD" and frame_count(im) == 1
    im = decode_image(path)  # was "truncated PSD": frames start at 1, seek(0) raised EOFError
    assert im.size == (40, 30)
    assert im.getpixel((5, 5)) == (0, 0, 255)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"8BPS\x00\x01\x00\x00\x00\x00", "corrupt PSD (Pillow cannot read its header)"),
        (
            b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 40,
            "corrupt JPEG 2000 (Pillow cannot read its header)",
        ),
        (b"\xff\x4f\xff\x51" + b"\x01" * 12, "corrupt JPEG 2000 (Pillow cannot read its header)"),
    ],
    ids=["psd", "jp2-box", "j2k-codestream"],
)
def test_corrupt_files_of_a_known_format_say_corrupt_and_which(data, reason):
    with pytest.raises(ImageError) as info:
        open_image(data)
    assert info.value.reason == reason


def test_libtiff_messages_go_into_the_reason_not_to_stderr(capfd):
    data = corrupt_lzw_tiff()
    with pytest.raises(ImageError) as info:
        decode_image(data, row=1)
    reason = info.value.reason
    assert reason.startswith("corrupt TIFF data (decoder error -2)")
    assert "libtiff: Using code not yet in table" in reason
    assert capfd.readouterr().err == ""


def test_pillows_warnings_are_captured_not_shown(tmp_path, recwarn):
    # A JPEG whose EXIF block is cut short: Pillow warns "Corrupt EXIF data" when reading it.
    im = Image.new("RGB", (16, 16), "red")
    exif = im.getexif()
    exif[0x0112] = 1
    exif[0x010F] = "camera maker " * 20
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes()[:60] + b"\x00" * 4)
    im2 = open_image(buf.getvalue())
    from visionkit.images.decode import orientation
    from visionkit.images.pil_errors import pil_errors

    with pil_errors():
        assert orientation(im2) == 1
    assert [str(w.message) for w in recwarn if "PIL" in w.filename] == []


def test_only_regular_files_are_read_and_under_the_download_cap(tmp_path):
    """/dev/zero, a FIFO nobody writes to and a file over the cap are each that row's error,
    at once: nothing is read (in a subprocess with an address-space limit and an alarm, so a
    regression fails instead of eating the machine's memory or hanging the suite)."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:  # sparse: 60 MB that take no disk
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(60 * 1024 * 1024)
    script = f"""
import resource, signal, warnings
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
signal.alarm(60)
import pandas as pd
import visionkit as vk
from visionkit import ImageError
from visionkit.images.cells import read_bytes
from visionkit.images.encode import encode_series
cells = ["/dev/zero", {str(fifo)!r}, {str(big)!r}]
for i, cell in enumerate(cells):
    try:
        read_bytes(cell, row=i)
    except ImageError as exc:
        print(exc)
warnings.simplefilter("ignore")
uris = encode_series(pd.Series(cells), progress=False)
print(sorted(uris.attrs["errors"]))
info = vk.inspect_images(cells)
print(info.error.tolist()[:2])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "row 0: not a regular file (a character device); only files are read"
    assert lines[1] == "row 1: not a regular file (a FIFO); only files are read"
    assert lines[2] == (
        "row 2: file over the 50 MB cap (62,914,560 bytes; VISIONKIT_MAX_IMAGE_BYTES raises it)"
    )
    assert lines[3] == "[0, 1, 2]"
    assert "a FIFO" in lines[4] and "a character device" in lines[4]
