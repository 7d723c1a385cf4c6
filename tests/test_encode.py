"""encode_image / df.vision.encode: provider-acceptable data URIs from awkward files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from image_factory import (
    animated_gif,
    bomb_png,
    exif_rotated_jpeg,
    gradient16,
    palette_with_transparency,
    photo,
    png_bytes,
    send,
    serve,
    truncated_jpeg,
)
from PIL import Image, ImageFile, ImageOps

import visionkit as vk
from visionkit import ImageError, get_provider
from visionkit.encode import EncodeWarning, encode_image, encode_series
from visionkit.sources import decode_data_uri, sniff_format

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


def test_large_jpeg_is_decoded_in_draft_mode(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    photo(2400, 1800).save(path, quality=80)
    loaded = []
    original = ImageFile.ImageFile.load

    def spy(self):
        loaded.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
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
