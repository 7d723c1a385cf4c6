"""thumbnail() and df.vision.show(): small, cached thumbnails in an inline HTML grid."""

from __future__ import annotations

import io
import os
import re

import pandas as pd
import pytest
from image_factory import exif_rotated_jpeg, palette_with_transparency, photo
from PIL import Image

from visionkit import ImageError, thumbnail
from visionkit.images import thumbnails as display_module
from visionkit.images.formats import sniff_format
from visionkit.images.thumbnails import ImageGrid, clear_thumbnail_cache


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_thumbnail_cache()
    yield
    clear_thumbnail_cache()


@pytest.fixture
def calls(monkeypatch) -> list:
    """What ``thumbnail`` decoded during the test (each ``decode_image`` call's cell)."""
    cells = []
    real = display_module.decode_image

    def counting(*args, **kwargs):
        cells.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(display_module, "decode_image", counting)
    return cells


def test_thumbnail_is_a_small_jpeg_of_the_right_shape(tmp_path):
    path = tmp_path / "big.jpg"
    photo(1600, 1200).save(path)
    data = thumbnail(path, thumb_size=160)
    assert sniff_format(data) == "jpeg"
    im = Image.open(io.BytesIO(data))
    assert im.size == (160, 120)
    assert len(data) < 20_000


def test_thumbnail_is_upright_and_png_when_transparent(tmp_path):
    rotated = Image.open(
        io.BytesIO(thumbnail(exif_rotated_jpeg(tmp_path / "r.jpg"), thumb_size=100))
    )
    assert rotated.size == (25, 100)
    data = thumbnail(palette_with_transparency(), thumb_size=32)
    assert sniff_format(data) == "png"
    im = Image.open(io.BytesIO(data)).convert("RGBA")
    assert im.getpixel((20, 5))[3] == 0


def test_thumbnail_never_upscales(tmp_path):
    path = tmp_path / "s.png"
    photo(40, 30).save(path)
    assert Image.open(io.BytesIO(thumbnail(path, thumb_size=160))).size == (40, 30)


def test_thumbnail_cache_hits_and_invalidates_on_change(tmp_path, calls):
    path = tmp_path / "a.jpg"
    photo(400, 300).save(path)
    first = thumbnail(path)
    assert thumbnail(str(path)) == first
    assert len(calls) == 1
    photo(400, 200, seed=9).save(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = thumbnail(path)
    assert len(calls) == 2
    assert Image.open(io.BytesIO(changed)).size == (160, 80)
    data = path.read_bytes()
    thumbnail(data)
    thumbnail(bytes(data))
    assert len(calls) == 3  # bytes are keyed by content


def test_cache_is_bounded_by_entries_and_bytes(tmp_path, monkeypatch, calls):
    monkeypatch.setattr(display_module, "_cache", display_module._new_cache(2, 10**6))
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        photo(64, 48, seed=i).save(paths[-1])
        thumbnail(paths[-1])
    assert len(display_module._cache) == 2  # at most 2 entries
    thumbnail(paths[2])
    assert len(calls) == 3  # the newest is cached
    thumbnail(paths[0])
    assert len(calls) == 4  # the oldest was evicted
    small = display_module._new_cache(1000, 3000)  # at most 3,000 bytes
    small["a"], small["b"] = b"x" * 2000, b"y" * 2000
    assert list(small) == ["b"]


def test_thumbnail_errors_name_the_row(tmp_path):
    with pytest.raises(ImageError, match="row 4: file not found"):
        thumbnail(tmp_path / "nope.jpg", row=4)


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    paths = []
    for i in range(5):
        p = tmp_path / f"img{i}.jpg"
        photo(300, 200, seed=i).save(p)
        paths.append(str(p))
    (tmp_path / "bad.jpg").write_text("nope")
    paths.append(str(tmp_path / "bad.jpg"))
    return pd.DataFrame(
        {"path": paths, "label": ["cat", "dog", "<b>x</b>", "cat", "dog", "?"], "score": 0.5}
    )


def test_show_renders_a_grid_with_captions_and_error_tiles(frame):
    grid = frame.vision.show(caption="label")
    assert isinstance(grid, ImageGrid)
    html = grid._repr_html_()
    assert html.count("<img ") == 5
    assert html.count("data:image/jpeg;base64,") == 5
    assert "not an image (looks like text)" in html  # the placeholder tile
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html  # escaped
    assert "showing" not in html  # all 6 shown
    assert repr(grid) == "ImageGrid(showing 6 of 6 images, 1 unreadable)"
    assert len(html) < 6 * 20_000  # thumbnails, not full images


def test_show_truncates_with_a_note_and_multiple_caption_columns(frame):
    html = frame.vision.show(n=2, caption=["label", "score"])._repr_html_()
    assert html.count("<figure") == 2
    assert "showing 2 of 6 images" in html
    assert "label: cat" in html and "score: 0.5" in html


def test_show_default_caption_is_row_and_file_name(frame):
    html = frame.vision.show(n=1)._repr_html_()
    assert re.search(r"<figcaption[^>]*>0: img0\.jpg</figcaption>", html)


def test_show_bad_caption_column(frame):
    with pytest.raises(KeyError, match="nope"):
        frame.vision.show(caption="nope")


def test_show_default_n_caps_large_sets(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGB", (20, 20), "red").save(p)
    df = pd.DataFrame({"image": [str(p)] * 100})
    grid = df.vision.show(thumb_size=64)
    assert len(grid.tiles) == display_module.DEFAULT_N
    assert f"showing {display_module.DEFAULT_N} of 100" in grid._repr_html_()
