"""encode_image / df.vision.encode: provider-acceptable data URIs from awkward files."""

from __future__ import annotations

import base64
import inspect
import io
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from image_factory import (
    animated_gif,
    apng_with_zero_frames,
    bomb_png,
    corrupt_lzw_tiff,
    dds_dx10,
    exif_rotated_jpeg,
    gradient16,
    icc_profile,
    palette_with_transparency,
    phone_jpeg,
    photo,
    png_bytes,
    save,
    send,
    serve,
    thin_bombs,
    truncated_jpeg,
)
from PIL import Image, ImageCms, ImageFile, ImageOps

import visionkit as vk
from visionkit import ImageError, get_provider
from visionkit.images.cells import decode_data_uri
from visionkit.images.decode import decode_image
from visionkit.images.encode import EncodeWarning, encode_image, encode_series
from visionkit.images.formats import sniff_format
from visionkit.images.metadata import strip_file_metadata

INET = get_provider("inference.net")


def decode(uri: str) -> Image.Image:
    """Check the URI is well formed and its mimetype matches its bytes; return the image."""
    mime, data = decode_data_uri(uri)
    fmt = sniff_format(data[:32])
    assert fmt in INET.formats, fmt
    assert mime == f"image/{fmt}", (mime, fmt)
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def rgb(im: Image.Image, xy) -> tuple:
    return im.convert("RGB").getpixel(xy)


def close(a, b, tol=12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


@pytest.fixture
def loaded(monkeypatch) -> list[tuple[int, int]]:
    """The size of every image Pillow's ``load()`` decodes during the test, in order."""
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def spy(self):
        sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


# --- awkward files -----------------------------------------------------------------------------


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    path = exif_rotated_jpeg(tmp_path / "r.jpg", orientation=6)
    im = decode(encode_image(path))
    assert im.size == (100, 400)
    reference = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert reference.size == (100, 400)
    for xy in [(50, 20), (50, 380)]:
        assert close(rgb(im, xy), reference.getpixel(xy))
    assert close(rgb(im, (50, 20)), (255, 0, 0))  # orientation 6: the left (red) end on top
    assert close(rgb(im, (50, 380)), (0, 0, 255))


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 7, 8])
def test_every_exif_orientation_matches_pillows_transpose(tmp_path, orientation):
    path = exif_rotated_jpeg(tmp_path / "r.jpg", orientation=orientation)
    im = decode(encode_image(path)).convert("RGB")
    reference = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert im.size == reference.size
    diff = np.abs(np.asarray(im, int) - np.asarray(reference, int)).mean()
    assert diff < 3


def test_cmyk_jpeg_becomes_correct_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (60, 40), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    im = decode(encode_image(path))
    assert im.mode in ("RGB", "P")
    assert close(rgb(im, (30, 20)), (255, 0, 0), tol=20)


def test_cmyk_photo_matches_pillows_conversion(tmp_path):
    path = tmp_path / "cmyk.jpg"
    photo(200, 150).convert("CMYK").save(path, quality=95)
    im = decode(encode_image(path)).convert("RGB")
    reference = np.asarray(Image.open(path).convert("RGB"), float)
    ours = np.asarray(im, float)
    # colours agree (channel means); pixels differ only by the JPEG re-encode of the noise
    assert np.abs(ours.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).max() < 2
    assert np.abs(ours - reference).mean() < 12


def test_16bit_gradient_is_scaled_not_clipped_to_white(tmp_path):
    path = tmp_path / "deep.png"
    gradient16(256, 64).save(path)
    im = decode(encode_image(path))
    arr = np.asarray(im.convert("L"), dtype=int)[0]
    expected = np.rint(np.linspace(0, 65535, 256) / 257)
    assert np.abs(arr - expected).max() <= 1
    assert arr.min() == 0 and arr.max() == 255
    assert (np.diff(arr) >= 0).all()
    assert (arr == 255).sum() < 5  # clipping would make most of the row white


def test_32bit_integer_image_is_scaled():
    arr = np.tile(np.linspace(0, 4000, 100).astype(np.int32), (10, 1))
    im = decode(encode_image(Image.fromarray(arr)))
    row = np.asarray(im.convert("L"), dtype=int)[0]
    assert row.min() == 0 and row.max() == 16 and (np.diff(row) >= 0).all()


def _alpha_at(im: Image.Image, xy) -> int:
    return im.convert("RGBA").getpixel(xy)[3]


def test_palette_with_transparency_keeps_alpha_and_colours():
    im = decode(encode_image(palette_with_transparency()))
    rgba = im.convert("RGBA")
    assert rgba.getpixel((10, 10)) == (255, 0, 0, 255)
    assert rgba.getpixel((40, 40)) == (0, 255, 0, 255)
    assert rgba.getpixel((40, 10))[3] == 0  # transparent stays transparent


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_rgba_and_la_keep_alpha(mode):
    src = Image.new(mode, (80, 60), (200, 255) if mode == "LA" else (200, 30, 30, 255))
    src.paste((0, 0) if mode == "LA" else (0, 0, 0, 0), (40, 0, 80, 60))
    im = decode(encode_image(src))
    assert im.format in ("PNG", "WEBP")
    assert _alpha_at(im, (60, 30)) == 0
    assert _alpha_at(im, (10, 30)) == 255
    assert rgb(im, (10, 30))[0] == 200  # colour kept, not black


def test_alpha_resized_has_no_dark_fringe():
    src = Image.new("RGBA", (2400, 1200), (255, 255, 255, 0))
    src.paste((255, 255, 255, 255), (0, 0, 1200, 1200))
    im = decode(encode_image(src)).convert("RGBA")
    assert im.size == (1120, 560)
    arr = np.asarray(im)
    visible = arr[..., 3] > 16
    assert arr[visible][:, :3].min() >= 250  # premultiplied resize: white stays white


def test_alpha_to_jpeg_is_composited_on_white_not_black():
    src = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    im = decode(encode_image(src, format="jpeg"))
    assert im.format == "JPEG"
    assert close(rgb(im, (20, 20)), (255, 255, 255), tol=3)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_bmp_and_tiff_are_converted(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    photo(300, 200).save(path, fmt)
    im = decode(encode_image(path))
    assert im.format == "JPEG"
    assert im.size == (300, 200)
    ref = np.asarray(Image.open(path).convert("RGB"), float)
    ours = np.asarray(im, float)
    assert np.abs(ours.mean(axis=(0, 1)) - ref.mean(axis=(0, 1))).max() < 2
    assert np.abs(ours - ref).mean() < 12  # JPEG q90 re-encode of a noisy image


def test_animated_gif_becomes_its_first_frame(tmp_path):
    path = animated_gif(tmp_path / "a.gif")
    uri = encode_image(path)
    im = decode(uri)
    assert getattr(im, "n_frames", 1) == 1
    assert close(rgb(im, (10, 10)), (255, 0, 0), tol=5)


def test_single_frame_gif_passes_through(tmp_path):
    path = tmp_path / "one.gif"
    Image.new("P", (30, 30), 3).save(path)
    assert decode_data_uri(encode_image(path)) == ("image/gif", path.read_bytes())


def test_png_named_jpg_gets_the_png_mimetype(tmp_path):
    path = tmp_path / "liar.jpg"
    photo(64, 48).save(path, "PNG")
    mime, data = decode_data_uri(encode_image(path))
    assert mime == "image/png" and data == path.read_bytes()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p, "file not found"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty file (0 bytes)"),
        (lambda p: (p.write_text("hello, I am text"), p)[1], "not an image (looks like text)"),
        (bomb_png, "decompression bomb: 20000x20000 = 400 MP exceeds the 89 MP limit"),
        (truncated_jpeg, "truncated JPEG"),
    ],
    ids=["missing", "empty", "text", "bomb", "truncated"],
)
def test_bad_files_raise_a_clear_image_error(tmp_path, make, reason):
    path = make(tmp_path / "bad.jpg")
    with pytest.raises(ImageError) as info:
        encode_image(path, row="r1")
    assert info.value.row == "r1"
    assert reason in info.value.reason


def test_small_truncated_jpeg_is_not_passed_through(tmp_path):
    path = truncated_jpeg(tmp_path / "cut.jpg", size=(300, 200))  # small: passthrough size
    with pytest.raises(ImageError, match="truncated JPEG"):
        encode_image(path)


# --- sizing -------------------------------------------------------------------------------------


def test_never_upscales(tmp_path):
    path = tmp_path / "tiny.bmp"
    photo(50, 40).save(path)
    for kwargs in ({}, {"max_side": 1000}, {"max_tokens": 6404}):
        assert decode(encode_image(path, **kwargs)).size == (50, 40)


def test_small_allowed_images_pass_through_byte_for_byte(tmp_path):
    path = tmp_path / "small.jpg"
    photo(640, 480).save(path, quality=85)
    assert decode_data_uri(encode_image(path)) == ("image/jpeg", path.read_bytes())


def test_default_downscale_to_the_providers_max_side(tmp_path):
    path = tmp_path / "big.jpg"
    photo(2000, 1500).save(path)
    assert decode(encode_image(path)).size == (1120, 840)
    assert decode(encode_image(path, max_side=600)).size == (600, 450)
    assert decode(encode_image(path, provider="openai-low")).size == (512, 384)


def test_large_jpeg_is_decoded_in_draft_mode(tmp_path, loaded):
    path = tmp_path / "big.jpg"
    photo(2400, 1800).save(path, quality=80)
    im = decode(encode_image(path))
    assert im.size == (1120, 840)
    assert loaded[0] == (1200, 900)  # DCT-domain 1/2 scale, not 2400x1800


def test_max_tokens_budget(tmp_path):
    path = tmp_path / "big.jpg"
    photo(2000, 1000).save(path)
    for budget in (1601, 3202, 4000):
        im = decode(encode_image(path, max_tokens=budget))
        w, h = im.size
        assert INET.estimate(w, h) <= budget
        assert INET.estimate(w + 2, h + 1) > budget or (w, h) == (1120, 560)
        assert abs(w / h - 2) < 0.01
    with pytest.raises(ValueError, match="minimum of 1601"):
        encode_image(path, max_tokens=1000)


def test_noisy_camera_image_fits_the_providers_image_budget(tmp_path):
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    path = tmp_path / "noise.jpg"
    Image.fromarray(noise).save(path, quality=95)
    uri = encode_image(path)
    assert len(uri) <= INET.image_budget()
    # two such images and a prompt fit one inference.net request
    assert 2 * len(uri) + 16_384 < INET.max_body_bytes
    assert decode(uri).size[0] <= 1120


def test_max_bytes_is_met_by_lower_quality_then_smaller_size(tmp_path):
    path = tmp_path / "p.png"
    photo(1000, 800, seed=3).save(path)
    for limit in (200_000, 40_000, 8_000):
        uri = encode_image(path, max_bytes=limit)
        assert len(uri) <= limit
        decode(uri)
    with pytest.raises(ImageError, match="cannot fit"):
        encode_image(path, max_bytes=300)


def test_big_transparent_png_fits_via_webp_when_png_is_too_big():
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 256, (500, 500, 4), dtype=np.uint8)
    arr[..., 3] = 255
    arr[:100, :100, 3] = 0
    uri = encode_image(Image.fromarray(arr, "RGBA"), max_bytes=150_000)
    im = decode(uri)
    assert im.format == "WEBP"
    assert len(uri) <= 150_000
    assert _alpha_at(im, (10, 10)) == 0


def test_format_argument(tmp_path):
    src = photo(100, 80)
    assert decode(encode_image(src, format="png")).format == "PNG"
    assert decode(encode_image(src, format="webp")).format == "WEBP"
    assert decode(encode_image(src, format="jpg")).format == "JPEG"
    with pytest.raises(ValueError, match="must be one of"):
        encode_image(src, format="bmp")


def test_quality_is_close_to_a_reference_resize(tmp_path):
    src = photo(3000, 2000, seed=5)
    path = tmp_path / "big.jpg"
    src.save(path, quality=95)
    im = decode(encode_image(path)).convert("RGB")
    ref = Image.open(path).convert("RGB").resize(im.size, Image.Resampling.LANCZOS)
    mse = np.mean((np.asarray(im, float) - np.asarray(ref, float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 35


def test_draft_mode_costs_no_quality_against_the_naive_path(tmp_path):
    # Equal quality = as close to a full-decode Lanczos reference as decode + thumbnail() +
    # the same JPEG (PSNR between the two outputs is capped by JPEG noise, not by the resize).
    path = tmp_path / "cam.jpg"
    photo(3200, 2400, seed=8).save(path, quality=92)
    ours = decode(encode_image(path)).convert("RGB")
    with Image.open(path) as full:
        full.load()
        ref = np.asarray(full.resize(ours.size, Image.Resampling.LANCZOS), float)
        naive = full.copy()
    naive.thumbnail((1120, 1120))
    buf = io.BytesIO()
    naive.save(buf, "JPEG", quality=90)
    naive = Image.open(buf)

    def psnr(im):
        return 10 * np.log10(255**2 / np.mean((np.asarray(im, float) - ref) ** 2))

    assert ours.size == naive.size == (1120, 840)
    assert psnr(ours) >= psnr(naive) - 0.25


def test_url_source(tmp_path):
    body = png_bytes(photo(40, 30))
    with serve({"/a.png": lambda req: send(req, body)}) as base:
        assert decode_data_uri(encode_image(f"{base}/a.png")) == ("image/png", body)


# --- many images --------------------------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path) -> pd.DataFrame:
    photo(200, 100).save(tmp_path / "ok.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    animated_gif(tmp_path / "a.gif")
    paths = [tmp_path / "ok.jpg", tmp_path / "text.jpg", tmp_path / "a.gif", tmp_path / "no.png"]
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=["a", "b", "c", "d"])


def test_accessor_encode_coerces_with_one_warning_naming_rows(mixed):
    with pytest.warns(EncodeWarning) as record:
        out = mixed.vision.encode()
    assert len(record) == 1
    message = str(record[0].message)
    assert "2 of 4 images" in message
    assert "row 'b': not an image (looks like text)" in message
    assert "row 'd': file not found" in message
    assert list(out.index) == ["a", "b", "c", "d"]
    assert out.dtype == object
    assert out.isna().tolist() == [False, True, False, True]
    assert out.attrs["errors"] == {
        "b": "not an image (looks like text)",
        "d": "file not found",
    }
    for uri in out.dropna():
        decode(uri)


def test_accessor_encode_raise_names_the_row(mixed):
    with pytest.raises(ImageError, match="row 'b': not an image") as info:
        mixed.vision.encode(errors="raise")
    assert info.value.row == "b"


def test_encode_series_without_failures_is_silent_and_matches_encode_image(mixed):
    ok = mixed.loc[["a", "c"], "path"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = encode_series(ok, workers=2, progress=False)
    assert out.tolist() == [encode_image(p) for p in ok]
    assert encode_series(ok, workers=1, progress=False).tolist() == out.tolist()


def test_encode_series_takes_encode_images_options_and_passes_them_on(mixed):
    # Both keep explicit keyword lists (help(), IDEs, mypy): the shared ones must not drift.
    one, many = (inspect.signature(f).parameters for f in (encode_image, encode_series))
    assert set(one) - set(many) == {"image", "compact", "row"}  # one image's own
    for name in set(one) & set(many):
        assert (many[name].kind, many[name].default, many[name].annotation) == (
            one[name].kind,
            one[name].default,
            one[name].annotation,
        ), name
    options = {"provider": "openai", "max_side": 24, "max_tokens": 300, "max_bytes": 60_000}
    options.update(format="png", strip_metadata=False)
    assert set(options) == set(one) & set(many)  # every shared option is tried
    ok = mixed.loc[["a", "c"], "path"]
    out = encode_series(ok, progress=False, **options)
    assert out.tolist() == [encode_image(p, **options) for p in ok]
    assert out.tolist() != encode_series(ok, progress=False).tolist()


def test_encode_series_argument_errors(mixed):
    with pytest.raises(ValueError, match="errors"):
        encode_series(mixed["path"], errors="ignore")
    with pytest.raises(ValueError, match="format"):
        mixed.vision.encode(format="tiff")


def test_encode_mixed_cell_kinds(tmp_path):
    data = png_bytes(photo(30, 20))
    cells = pd.Series([data, Image.open(io.BytesIO(data)), Path(tmp_path / "missing.png")])
    with pytest.warns(EncodeWarning, match="row 2: file not found"):
        out = vk.encode_image  # the public name exists
        out = encode_series(cells, progress=False)
    assert decode_data_uri(out[0]) == ("image/png", data)
    assert decode(out[1]).size == (30, 20)


def test_cmyk_profile_is_not_copied_onto_the_rgb_output(tmp_path):
    path = tmp_path / "cmyk.jpg"
    fake_profile = b"\0" * 128  # unusable: the plain conversion is used
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(path, icc_profile=fake_profile)
    im = decode(encode_image(path))
    assert "icc_profile" not in im.info
    assert close(rgb(im, (15, 15)), (255, 0, 0), tol=20)


def test_mislabelled_data_uri_gets_the_true_mimetype():
    data = png_bytes(photo(20, 10))
    lying = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    assert decode_data_uri(encode_image(lying)) == ("image/png", data)


# --- phone-size JPEGs: allowed by what they allocate, not what they declare ---------------------


@pytest.fixture(scope="session")
def phone(tmp_path_factory) -> Path:
    return phone_jpeg(tmp_path_factory)  # 12000 x 9000 = 108 MP, over Pillow's 89 MP limit


def _pillow_buffers() -> int:
    """Pillow's count of pixel memory blocks handed out (<= 16 MB each), cumulative."""
    stats = Image.core.get_stats()
    return stats["allocated_blocks"] + stats["reused_blocks"] + stats["reallocated_blocks"]


def test_108mp_phone_jpeg_encodes_in_draft_mode_with_little_memory(phone, loaded):
    blocks = _pillow_buffers()
    tracemalloc.start()
    try:
        uri = encode_image(phone, row="p")
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # tracemalloc sees Python's allocations (the file's 1.7 MB, the URI), not Pillow's pixel
    # buffers (plain malloc): those are pinned by the decode size and Pillow's own counter.
    assert set(loaded) == {(1500, 1125)}  # libjpeg's 1/8 scale: 6.75 MB, not 432 MB
    assert _pillow_buffers() - blocks <= 4  # a full decode alone takes 26 blocks of 16 MB
    assert python_peak < 3 * phone.stat().st_size + 2 * len(uri)
    im = decode(uri)
    assert im.size == (1120, 840)
    assert close(rgb(im, (100, 400)), (200, 40, 40)) and close(rgb(im, (1000, 400)), (30, 60, 220))


def test_phone_jpeg_thumbnail_and_decode_image(phone):
    from visionkit.images.thumbnails import thumbnail

    assert Image.open(io.BytesIO(thumbnail(phone, thumb_size=160))).size == (160, 120)
    assert decode_image(phone, max_side=2000).size == (2000, 1500)
    with pytest.raises(ImageError) as info:
        decode_image(phone, row=4)  # full size: 108 MP in one allocation
    assert info.value.row == 4
    assert info.value.reason == (
        "decompression bomb: 12000x9000 = 108 MP exceeds the 89 MP limit "
        "(PIL.Image.MAX_IMAGE_PIXELS) when decoded in full; a JPEG this size is decoded at "
        "1/2 scale (draft mode) for a target of at most 6000 px a side: ask for that "
        "(max_side=) or less"
    )
    assert decode_image(phone, max_side=6000).size == (6000, 4500)


def test_phone_jpeg_follows_the_users_pixel_limit(phone, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000_000)  # Pillow alone: error at 80 MP
    assert decode(encode_image(phone)).size == (1120, 840)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # even 1/8 (1.7 MP) is over
    with pytest.raises(ImageError, match="even decoded at 1/8 scale"):
        encode_image(phone)


def test_a_callers_lazy_big_jpeg_is_not_decoded_in_full(phone):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(phone)
    with pytest.raises(ImageError, match="pass the file's path or bytes instead"):
        encode_image(im)
    assert im.size == (12000, 9000)  # never drafted: it is the caller's image


def test_png_bomb_still_errors_without_allocating(tmp_path):
    path = bomb_png(tmp_path / "bomb.png", 12000, 9000)
    before = Image.core.get_stats()["new_count"]
    with pytest.raises(ImageError, match=r"12000x9000 = 108 MP exceeds the 89 MP limit"):
        encode_image(path)
    assert Image.core.get_stats()["new_count"] == before


# --- metadata -----------------------------------------------------------------------------------

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>secret-xmp</rdf:RDF></x:xmpmeta>'


def _exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "secret-make"
    exif[0x0112] = 1
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 26.0), 3: "W", 4: (0.0, 7.0, 39.0)}
    return exif


def _segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(body) + 2).to_bytes(2, "big") + body


def with_metadata(fmt: str, im: Image.Image | None = None, **save) -> bytes:
    """A small image in ``fmt`` with EXIF+GPS, XMP, a comment and an sRGB ICC profile."""
    im = im or photo(96, 64)
    buf = io.BytesIO()
    if fmt == "png":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "secret-text")
        info.add_text("Author", "secret-ztxt", zip=True)
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        im.save(buf, "PNG", exif=_exif_with_gps(), pnginfo=info, icc_profile=SRGB, **save)
    elif fmt == "webp":
        im.save(buf, "WEBP", exif=_exif_with_gps(), xmp=XMP, icc_profile=SRGB, **save)
    elif fmt == "gif":
        im.convert("P").save(buf, "GIF", comment=b"secret-comment", **save)
    else:
        im.save(
            buf, "JPEG", exif=_exif_with_gps(), xmp=XMP, icc_profile=SRGB,
            comment=b"secret-comment", quality=85, **save,
        )  # fmt: skip
        data = buf.getvalue()  # + IPTC (APP13) after SOI, and a trailing "gain map" with EXIF
        iptc = _segment(0xED, b"Photoshop 3.0\0" + b"8BIM\x04\x04\0\0\0\0\0\x10secret-iptc-abc")
        return data[:2] + iptc + data[2:] + b"\xff\xd8\xff\xe1secret-trailing-exif\xff\xd9"
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.load()
    return np.asarray(im.convert("RGBA"))


@pytest.mark.parametrize(
    ("fmt", "save"),
    [("jpeg", {}), ("jpeg", {"progressive": True}), ("jpeg", {"restart_marker_blocks": 3}),
     ("png", {}), ("webp", {"lossless": True}), ("webp", {"quality": 80}), ("gif", {})],
    ids=["jpeg", "jpeg-progressive", "jpeg-restarts", "png", "webp-lossless", "webp-lossy", "gif"],
)  # fmt: skip
def test_passthrough_strips_metadata_losslessly(fmt, save):
    original = with_metadata(fmt, **save)
    assert b"secret" in original
    mime, sent = decode_data_uri(encode_image(original))
    assert mime == f"image/{fmt}"
    assert b"secret" not in sent and len(sent) < len(original)
    assert np.array_equal(_pixels(sent), _pixels(original))  # the same pixels, bit for bit
    out = Image.open(io.BytesIO(sent))
    assert not out.getexif() and not out.getexif().get_ifd(0x8825)  # no EXIF, no GPS
    assert "xmp" not in out.info and "comment" not in out.info
    if fmt != "gif":
        assert out.info.get("icc_profile") == SRGB  # colour kept
    # metadata kept on request: today's behaviour, the file byte for byte
    assert decode_data_uri(encode_image(original, strip_metadata=False))[1] == original


def test_stripped_webp_has_a_consistent_container():
    sent = decode_data_uri(encode_image(with_metadata("webp", quality=80)))[1]
    assert int.from_bytes(sent[4:8], "little") == len(sent) - 8  # RIFF size fixed
    assert sent[12:16] == b"VP8X"
    flags = sent[20]
    assert flags & 0x20  # ICC
    assert not flags & (0x08 | 0x04)  # neither EXIF nor XMP announced
    assert b"EXIF" not in sent and b"XMP " not in sent


def test_stripped_png_keeps_every_other_chunk_untouched():
    original = with_metadata("png")
    sent = decode_data_uri(encode_image(original))[1]
    for kind in (b"iCCP", b"IDAT", b"IEND"):
        start = original.index(kind) - 4
        end = start + 12 + int.from_bytes(original[start : start + 4], "big")
        assert original[start:end] in sent
    for kind in (b"eXIf", b"tEXt", b"zTXt", b"iTXt"):
        assert kind not in sent


def test_reencoded_images_carry_no_metadata_but_keep_the_icc_profile():
    original = with_metadata("jpeg", im=photo(1600, 1200))  # too big: resized and re-encoded
    sent = decode_data_uri(encode_image(original, format="jpeg"))[1]
    out = Image.open(io.BytesIO(sent))
    assert out.size == (1120, 840)
    assert b"secret" not in sent and not out.getexif()
    assert out.info.get("icc_profile") == SRGB
    png = decode_data_uri(encode_image(with_metadata("png", im=photo(1600, 1200)), format="png"))
    assert b"secret" not in png[1] and Image.open(io.BytesIO(png[1])).info["icc_profile"] == SRGB


def test_strip_metadata_reaches_the_accessor():
    df = pd.DataFrame({"image": [with_metadata("jpeg"), with_metadata("png")]})
    assert not any(b"secret" in decode_data_uri(u)[1] for u in df.vision.encode())
    kept = df.vision.encode(strip_metadata=False)
    assert all(b"secret" in decode_data_uri(u)[1] for u in kept)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "gif"])
def test_stripping_a_truncated_file_gives_none_never_an_exception(fmt):
    data = with_metadata(fmt)
    if fmt == "jpeg":
        data = data[: data.index(b"\xff\xd8", 2)]  # without the trailing extra image
    assert strip_file_metadata(data, fmt) is not None
    for cut in range(1, len(data) - 1, max(1, len(data) // 97)):
        assert strip_file_metadata(data[:cut], fmt) is None, cut


# --- format by content, and what gives way to the byte budget --------------------------------

DATASETS = Path(__file__).resolve().parents[1] / "datasets" / "images"


def grey_photo(width: int = 2000, height: int = 1500, seed: int = 0) -> Image.Image:
    """A greyscale photo-like image: a gradient plus sensor grain (256 grey levels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = 30 + 150 * x / width + 40 * np.sin(y / height * 7) + rng.normal(0, 10, (height, width))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def line_drawing(soften: bool = False) -> Image.Image:
    from PIL import ImageDraw, ImageFilter

    im = Image.new("L", (900, 700), 255)
    draw = ImageDraw.Draw(im)
    rng = np.random.default_rng(4)
    for _ in range(25):
        draw.line([tuple(rng.integers(0, 900, 2)), tuple(rng.integers(0, 700, 2))], 0, width=3)
    draw.ellipse((300, 200, 600, 500), outline=0, width=4)
    # a scanned or anti-aliased drawing: grey edge pixels, still flat paper around them
    return im.filter(ImageFilter.GaussianBlur(1.0)) if soften else im


def bar_chart() -> Image.Image:
    from PIL import ImageDraw

    im = Image.new("RGB", (1000, 700), "white")
    draw = ImageDraw.Draw(im)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    for i, c in enumerate(colours):
        draw.rectangle((80 + i * 120, 650 - 80 * (i + 1) // 2, 160 + i * 120, 650), fill=c)
    draw.line([(60, 30), (60, 650), (980, 650)], fill="black", width=3)
    for y in range(100, 650, 100):
        draw.line([(60, y), (980, y)], fill="#cccccc", width=1)
    assert len(im.getcolors(256)) == 10  # 7 bars, black axes, grey grid, white
    return im


def test_greyscale_photo_is_jpeg_at_full_size_not_a_shrunken_png(tmp_path):
    path = tmp_path / "grey.jpg"
    grey_photo().save(path, quality=92)
    im = decode(encode_image(path))
    assert im.format == "JPEG" and im.mode == "L"
    assert im.size == (1120, 840)  # the provider's max side, not shrunk to fit a PNG


def test_bundled_greyscale_photo_keeps_its_resolution():
    # datasets/images/gravel_large.jpg: 2000x1500 grey. As a PNG it went to 887x665 (3,011 tokens).
    im = decode(encode_image(DATASETS / "gravel_large.jpg"))
    assert (im.format, im.size) == ("JPEG", (1120, 840))
    assert INET.estimate(*im.size) == 4803  # clamp(1120/560) * clamp(840/560) * 1601


@pytest.mark.parametrize("soften", [False, True], ids=["crisp", "anti-aliased"])
def test_grey_line_drawing_is_png(soften):
    im = decode(encode_image(line_drawing(soften)))
    assert im.format == "PNG" and im.size == (900, 700)


def test_ten_colour_chart_is_png_and_lossless():
    chart = bar_chart()
    im = decode(encode_image(chart))
    assert im.format == "PNG"
    assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(chart))


def test_colour_photo_is_jpeg():
    assert decode(encode_image(photo(1000, 700, seed=2))).format == "JPEG"


def test_bundled_photos_are_never_taken_for_graphics():
    from visionkit.images.encode import _is_graphic

    paths = [p for p in sorted(DATASETS.iterdir()) if p.suffix in (".jpg", ".png", ".webp")]
    assert len(paths) >= 15
    taken = [p.name for p in paths if _is_graphic(decode_image(p, max_side=1120))]
    assert taken == []


def test_lower_jpeg_quality_comes_before_shrinking():
    src = photo(1000, 750, seed=6)
    full = len(encode_image(src, max_bytes=10**7))
    uri = encode_image(src, max_bytes=int(full * 0.7))  # q90 does not fit; q75 or so does
    im = decode(uri)
    assert len(uri) <= full * 0.7
    assert im.format == "JPEG" and im.size == (1000, 750)


def _busy_graphic(mode: str) -> Image.Image:
    """16 colours (a graphic to the heuristic) but busy, like a dithered map: PNG is big."""
    im = photo(900, 700, seed=3).quantize(16, dither=Image.Dither.NONE).convert("RGB")
    if mode == "RGBA":
        im.putalpha(255)
        im.paste((0, 0, 0, 0), (0, 0, 100, 100))
    return im


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "JPEG"), ("RGBA", "WEBP")])
def test_png_over_budget_changes_format_before_shrinking(mode, fmt):
    from visionkit.images.encode import _is_graphic

    src = _busy_graphic(mode)
    assert _is_graphic(src)
    png = len(encode_image(src, format="png", max_bytes=10**7))
    budget = int(png * 0.6)  # PNG cannot fit at this size: without a format change it would shrink
    im = decode(encode_image(src, max_bytes=budget))
    assert im.format == fmt and im.size == (900, 700)
    if mode == "RGBA":
        assert _alpha_at(im, (10, 10)) == 0 and _alpha_at(im, (500, 500)) == 255


# --- progress bar ------------------------------------------------------------------------------


@pytest.fixture
def bars(monkeypatch):
    """tqdm.auto's bar, writing to a buffer, with the one-second ``delay`` recorded then
    dropped (so the test sees what a long run would show, without waiting)."""
    import tqdm.auto
    import tqdm.std

    out, made = io.StringIO(), []

    def bar(*args, **kwargs):
        made.append(kwargs)
        kwargs = {**kwargs, "delay": 0, "file": out, "mininterval": 0}
        return tqdm.std.tqdm(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", bar)
    return out, made


@pytest.mark.parametrize("how", ["series", "accessor"])
def test_progress_false_shows_no_bar(bars, how):
    out, made = bars
    df = pd.DataFrame({"image": [photo(60, 40, seed=i) for i in range(3)]})
    if how == "series":
        uris = encode_series(df["image"], progress=False)
    else:
        uris = df.vision.encode(progress=False)
    assert uris.notna().all()
    assert out.getvalue() == ""
    assert all(kw.get("disable") for kw in made)


def test_progress_bar_by_default_appears_only_after_a_second(bars):
    out, made = bars
    df = pd.DataFrame({"image": [photo(60, 40, seed=i) for i in range(3)]})
    df.vision.encode()
    assert made and made[0].get("delay", 0) >= 1  # quick calls print nothing
    assert "encode" in out.getvalue() and "3/3" in out.getvalue()


# --- hostile files (issue 8) ----------------------------------------------------------------------


def test_an_exception_pillow_raises_for_one_row_never_ends_the_call(tmp_path):
    (tmp_path / "texture.dds").write_bytes(dds_dx10(dxgi_format=2))
    photo(64, 48).save(tmp_path / "ok.jpg")
    cells = pd.Series([str(tmp_path / "texture.dds"), str(tmp_path / "ok.jpg")], index=["t", "o"])
    with pytest.warns(EncodeWarning, match=r"row 't': unsupported DDS variant"):
        out = encode_series(cells, workers=2, progress=False)
    assert out.isna().tolist() == [True, False]
    assert out.attrs["errors"] == {"t": "unsupported DDS variant (Unimplemented DXGI format 2)"}
    with pytest.raises(ImageError, match="row 't': unsupported DDS variant"):
        encode_image(cells["t"], row="t")


def test_apng_with_zero_frames_is_reencoded_never_passed_through():
    data = apng_with_zero_frames()
    uri = encode_image(data)
    _, sent = decode_data_uri(uri)
    assert sent != data and b"acTL" not in sent and b"fdAT" not in sent
    im = decode(uri)
    assert im.size == (80, 60) and rgb(im, (5, 5)) == (255, 0, 0)  # Pillow's default image


def test_passthrough_only_sends_what_decodes():
    # intact at both ends, garbage in the middle: the old end-of-file check let it through
    buf = io.BytesIO()
    photo(200, 150).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.find(b"IDAT")
    data[idat + 40 : idat + 400] = b"\x00" * 360
    with pytest.raises(ImageError, match="PNG"):
        encode_image(bytes(data))


def test_encode_and_ask_print_nothing_from_pillow_or_libtiff(capfd, recwarn):
    apng = apng_with_zero_frames()
    cells = pd.Series([apng, corrupt_lzw_tiff(), apng])
    out = encode_series(cells, workers=2, progress=False)
    assert out.isna().tolist() == [False, True, False]
    assert "libtiff: Using code not yet in table" in out.attrs["errors"][1]
    assert capfd.readouterr().err == ""
    assert [w for w in recwarn if not issubclass(w.category, EncodeWarning)] == []


_PEAK_SCRIPT = """
import sys, warnings
from visionkit.images.encode import encode_series

def hwm():  # peak RSS of this process image, MB (ru_maxrss would include the parent's peak)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) // 1024

path, n, cut = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "cut"
base = hwm()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = encode_series([path] * n, workers=1, progress=False)
assert out.isna().all() == cut, out.attrs["errors"]
print(hwm() - base)
"""


def _peak_mb(path: Path, n: int, cut: bool) -> int:
    """Peak RSS (MB over the baseline after imports) of encode_series over ``n`` copies of
    ``path``, in a fresh interpreter: Pillow's pixel buffers are invisible to tracemalloc."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path), str(n), "cut" if cut else "ok"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_failing_set_peaks_no_higher_than_a_passing_one(tmp_path):
    """Eight truncated 3000x3000 PNGs: each failure's traceback held its 27 MB of decoded pixels
    until encode_series returned (issue 8: twelve 6000x6000 ones peaked at 943 MB)."""
    im = Image.linear_gradient("L").resize((3000, 3000)).convert("RGB")
    im.save(tmp_path / "ok.png", compress_level=1)
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) * 7 // 10])
    passing = _peak_mb(tmp_path / "ok.png", 8, cut=False)
    failing = _peak_mb(tmp_path / "cut.png", 8, cut=True)
    assert passing > 20  # the measurement sees the decodes at all
    assert failing <= passing + 20, (failing, passing)


# --- ICC profiles and the byte budget (issue 8 item 8) ----------------------------------------


def test_a_small_jpeg_with_a_huge_icc_profile_fits_once_converted_to_srgb():
    buf = io.BytesIO()
    original = photo(64, 48)
    original.save(buf, "JPEG", quality=95, icc_profile=icc_profile(400_000))
    data = buf.getvalue()
    assert len(data) > 400_000  # 4/3 of it as base64 is over inference.net's 491,807 budget
    uri = encode_image(data)  # was: "cannot fit within 491,807 bytes even at 16x8"
    assert len(uri) <= INET.image_budget()
    im = decode(uri)
    assert im.size == (64, 48) and "icc_profile" not in im.info
    source = Image.open(io.BytesIO(data))
    diff = np.abs(np.asarray(im, int) - np.asarray(source, int)).mean()
    assert diff < 4  # sRGB to sRGB: the colours are unchanged (JPEG noise only)


def test_a_profile_that_would_force_a_shrink_is_dropped_first():
    im = photo(500, 375)
    plain = io.BytesIO()
    im.save(plain, "JPEG", quality=50)
    budget = len(plain.getvalue()) * 4 // 3 + 1000  # fits at quality 50 without a profile...
    profile = icc_profile(budget // 10 - 64)  # ...small enough to be kept at first
    buf = io.BytesIO()
    im.save(buf, "PNG", icc_profile=profile)  # not a JPEG: nothing passes through
    out = decode(encode_image(buf.getvalue(), max_bytes=budget))
    assert out.size == (500, 375)  # the profile went, not the resolution
    assert "icc_profile" not in out.info


def test_a_profile_that_fits_is_still_kept():
    profile = icc_profile(20_000)
    buf = io.BytesIO()
    photo(300, 200).save(buf, "PNG", icc_profile=profile)
    out = decode(encode_image(buf.getvalue()))
    assert out.info.get("icc_profile") == profile


def test_thin_bombs_are_refused_before_pillow_allocates_their_rows(tmp_path):
    """Pillow's own test corpus peaked near 1 GB on such files; read_images and encode over
    them (two workers) now stay small, and each is its row's error (in a subprocess, to
    measure its peak memory alone)."""
    folder = tmp_path / "hostile"
    thin_bombs(folder)
    script = f"""
import warnings
warnings.simplefilter("ignore")
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
import visionkit as vk
from visionkit.images.encode import encode_series
before = peak()
df = vk.read_images({str(folder)!r})
uris = encode_series(df.path, progress=False, workers=2)
print(peak() - before)
print(df.error.tolist())
print(uris.notna().tolist())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    grown, errors, encoded = done.stdout.splitlines()
    assert int(grown) < 150, grown  # MB; a single thin bomb's rows alone took 640 MB
    assert encoded == "[True, False, False, False]"  # the photo sorts first
    assert errors.count("Pillow keeps a pointer per row") == 3


def test_jpeg2000_is_decoded_at_a_resolution_level_near_the_target(tmp_path, monkeypatch):
    """Like a JPEG's draft mode: a 2400x1800 JPEG 2000 wanted at 1120 px is decoded at half
    size (its next resolution level), a quarter of the memory; the result is the same size."""
    from PIL import Jpeg2KImagePlugin

    path = save(photo(2400, 1800), tmp_path / "big.jp2", "JPEG2000")
    loaded: list[tuple[int, int]] = []
    real = Jpeg2KImagePlugin.Jpeg2KImageFile.load

    def spy(self):
        out = real(self)
        loaded.append(self.size)
        return out

    monkeypatch.setattr(Jpeg2KImagePlugin.Jpeg2KImageFile, "load", spy)
    im = decode(encode_image(path))
    assert im.size == (1120, 840)
    assert loaded and loaded[-1] == (1200, 900)
    tiny = save(photo(8, 6), tmp_path / "tiny.jp2", "JPEG2000")
    assert decode(encode_image(tiny)).size == (8, 6)  # nothing to reduce


def test_rows_are_encoded_a_chunk_at_a_time_in_order_and_never_all_at_once():
    """encode's thread pool takes rows in chunks, a bounded number ahead (a future a row cost
    a fifth of a tiny image's time, and a million of them held memory), results in order."""
    import threading

    from visionkit.images.encode import _map_rows

    class Bar:
        n = 0

        def update(self, k=1):
            self.n += k

    started: list[int] = []
    release = threading.Event()

    def one(i):
        started.append(i)
        if i == 0:
            assert release.wait(10)
        return i * i

    n, workers = 20_000, 2
    result: list = []
    runner = threading.Thread(target=lambda: result.extend(_map_rows(one, n, workers, Bar())))
    runner.start()
    time.sleep(0.5)  # row 0 holds its chunk: the other threads run ahead as far as allowed
    ahead = len(started)
    release.set()
    runner.join(30)
    assert result == [i * i for i in range(n)]
    assert 1 < ahead <= 2 * workers * 64 < n  # bounded, however many rows there are

    def failing(i):
        if i in (700, 9000):
            raise ValueError(f"row {i}")
        return i

    with pytest.raises(ValueError, match="row 700"):  # the first failing row in order
        _map_rows(failing, n, workers, Bar())


def test_an_interrupt_in_encode_does_not_wait_for_whole_chunks():
    """Ctrl-C arrives in the main thread while it waits for a chunk: it is raised between short
    waits, and the chunks running end at their next row, not after up to 64 more images."""
    import _thread
    import signal

    from visionkit.images.encode import _map_rows

    class Bar:
        def update(self, k=1):
            pass

    done: list[int] = []
    delivered: list[int] = []

    def on_sigint(signum, frame):
        delivered.append(len(done))  # what was done when the main thread took the interrupt
        raise KeyboardInterrupt

    def one(i):
        if i == 10:  # in the first chunk, the one the main thread waits for
            _thread.interrupt_main()  # Ctrl-C in a notebook
        time.sleep(0.01)
        done.append(i)
        return i

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            _map_rows(one, 100_000, 2, Bar())
    finally:
        signal.signal(signal.SIGINT, previous)
    first_chunk = sum(1 for i in done if i < 64)
    assert delivered and first_chunk < 64  # taken while the first chunk was still running
    assert len(done) - delivered[0] <= 4  # each thread finished the row it was on, no more
