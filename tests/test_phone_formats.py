"""HEIC/HEIF (pillow-heif, the visionkit[heif] extra) and AVIF (Pillow's own plugin): read,
inspect, show and encode like any other format, EXIF orientation included (issue 10)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from image_factory import phone_photo, photo
from PIL import Image, features

from visionkit.images.cells import decode_data_uri
from visionkit.images.decode import decode_image
from visionkit.images.encode import encode_image, encode_series
from visionkit.images.formats import sniff_format
from visionkit.images.read import inspect_images, read_images
from visionkit.images.thumbnails import thumbnail

pytest.importorskip("pillow_heif", reason="the visionkit[heif] extra (dev installs it)")
pytestmark = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF")

FORMATS = [("HEIF", "heic", ".heic"), ("AVIF", "avif", ".avif")]


def _close(a, b, tol=40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


@pytest.fixture
def phone_folder(tmp_path: Path) -> Path:
    for save_as, _, ext in FORMATS:
        phone_photo(tmp_path / f"upright{ext}", save_as)
        phone_photo(tmp_path / f"sideways{ext}", save_as, orientation=6)
    photo(40, 30).save(tmp_path / "plain.jpg")
    return tmp_path


def test_read_images_lists_heic_and_avif_with_displayed_sizes(phone_folder):
    df = read_images(phone_folder)
    df = df.set_index(df["path"].map(lambda p: Path(p).name))
    assert df["error"].isna().all(), df["error"].to_dict()
    for _, fmt, ext in FORMATS:
        assert df.loc[f"upright{ext}", ["format", "width", "height"]].tolist() == [fmt, 400, 100]
        # held sideways (EXIF 6): displayed 100 wide, 400 high, like a rotated JPEG
        assert df.loc[f"sideways{ext}", ["format", "width", "height"]].tolist() == [fmt, 100, 400]
    assert df.loc["upright.heic", "mode"] == "RGB" and df.loc["upright.heic", "frames"] == 1


@pytest.mark.parametrize(("save_as", "fmt", "ext"), FORMATS, ids=["heic", "avif"])
def test_phone_formats_encode_upright_as_jpeg_never_as_themselves(tmp_path, save_as, fmt, ext):
    path = phone_photo(tmp_path / f"sideways{ext}", save_as, orientation=6)
    assert sniff_format(path.read_bytes()[:32]) == fmt
    mime, data = decode_data_uri(encode_image(path))
    assert mime == "image/jpeg" and sniff_format(data[:32]) == "jpeg"  # inference.net's list
    im = Image.open(io.BytesIO(data)).convert("RGB")
    assert im.size == (100, 400)
    assert _close(im.getpixel((50, 20)), (255, 0, 0))  # orientation 6: the red end on top
    assert _close(im.getpixel((50, 380)), (0, 0, 255))
    assert b"PhoneMaker" not in data  # no EXIF goes to the provider


@pytest.mark.parametrize(("save_as", "fmt", "ext"), FORMATS, ids=["heic", "avif"])
def test_phone_formats_thumbnail_decode_and_inspect(tmp_path, save_as, fmt, ext):
    path = phone_photo(tmp_path / f"sideways{ext}", save_as, orientation=6)
    thumb = Image.open(io.BytesIO(thumbnail(path, thumb_size=80)))
    assert thumb.format == "JPEG" and thumb.size == (20, 80)
    assert _close(thumb.convert("RGB").getpixel((10, 5)), (255, 0, 0))
    assert decode_image(path, max_side=200).size == (50, 200)
    inspected = inspect_images([path.read_bytes()])
    assert inspected.loc[0, ["format", "width", "height"]].tolist() == [fmt, 100, 400]


def test_encode_series_mixes_phone_formats_with_the_rest(phone_folder):
    paths = sorted(str(p) for p in phone_folder.iterdir())
    out = encode_series(paths, progress=False)
    assert out.notna().all()
    assert {decode_data_uri(u)[0] for u in out} == {"image/jpeg"}


def test_an_avif_with_heifs_generic_brand_is_sniffed_as_avif():
    head = b"\x00\x00\x00\x20ftypmif1\x00\x00\x00\x00mif1avifmiafMA1B"
    assert sniff_format(head) == "avif"
    assert sniff_format(head.replace(b"avif", b"heic")) == "heic"


def test_without_pillow_heif_a_heic_row_says_which_extra_to_install(tmp_path):
    path = phone_photo(tmp_path / "photo.heic")
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"  # as if the extra were not installed
        "from visionkit.images.read import read_images\n"
        f"print(read_images({str(path)!r}).loc[0, 'error'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == (
        "unsupported image format 'heic' (install visionkit[heif] to read it)"
    )
