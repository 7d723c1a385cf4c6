"""Gallery: paging, filters, selection and the thumbnail cache, driven through its traits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image
from widget_images import image_frame

import visionkit as vk
import visionkit.images.thumbnails
from visionkit.widgets.gallery import Gallery


@pytest.fixture
def df(tmp_path):
    return image_frame(tmp_path / "imgs", n=30)


@pytest.fixture
def thumbnail_calls(monkeypatch):
    """Counts real thumbnail work: every call of visionkit.images.thumbnails.thumbnail."""
    calls = []
    real = visionkit.images.thumbnails.thumbnail

    def counting(image, *, thumb_size=160, **kwargs):
        calls.append((image, thumb_size))
        return real(image, thumb_size=thumb_size, **kwargs)

    monkeypatch.setattr(visionkit.images.thumbnails, "thumbnail", counting)
    return calls


def test_importable_from_visionkit():
    assert vk.Gallery is Gallery
    assert "Gallery" in vk.__all__


def test_first_page_sends_only_its_thumbnails_as_bytes(df):
    g = vk.Gallery(df, page_size=8, caption="answer")
    assert g.total == 30 and g.matching == 30 and g.page_count == 4
    assert len(g._thumbs) == 8 and len(g._items) == 8
    assert all(isinstance(t, bytes) and len(t) > 0 for t in g._thumbs)
    first = Image.open(io.BytesIO(g._thumbs[0]))
    assert max(first.size) <= 160
    assert [it["pos"] for it in g._items] == list(range(8))
    assert g._items[0]["caption"] == "Cat."
    assert g._items[0]["mime"] in ("image/jpeg", "image/png")
    assert g._items[0]["title"].startswith("Cat.\nr0: ")
    # Binary buffers on the wire, not base64 text.
    _state, buffer_paths, buffers = _remove_buffers(g.get_state())
    assert ["_thumbs", 0] in buffer_paths and len(buffers) >= 8


def test_captions_from_several_columns_and_the_index_by_default(df):
    assert vk.Gallery(df)._items[3]["caption"] == "r3"
    g = vk.Gallery(df, caption=["answer", "width"])
    assert g._items[1]["caption"] == "a dog · 130"
    with pytest.raises(KeyError, match="nope"):
        vk.Gallery(df, caption="nope")


def test_paging_and_clamping(df):
    g = vk.Gallery(df, page_size=8)
    g.page = 3
    assert [it["pos"] for it in g._items] == [24, 25, 26, 27, 28, 29]
    g.page = 99  # e.g. a stale value from the front end
    assert g.page == 3
    g.previous_page()
    assert g.page == 2 and g._items[0]["pos"] == 16
    g.next_page()
    g.next_page()
    assert g.page == 3
    g.page_size = 10
    assert g.page_count == 3 and g.page == 2 and len(g._items) == 10


def test_thumbnails_are_made_once_per_row(df, thumbnail_calls):
    g = vk.Gallery(df, page_size=8)
    for _ in range(2):  # page through everything twice, back and forth
        for page in [*range(4), *reversed(range(4))]:
            g.page = page
    g._cache.wait()
    assert sorted(c for c, _ in thumbnail_calls) == sorted(df["path"])
    info = g.cache_info()
    assert info.made == 30 and info.size == 30 and info.hits > 0


def test_next_page_is_prefetched(df, thumbnail_calls):
    g = vk.Gallery(df, page_size=8)
    g._cache.wait()
    assert len(thumbnail_calls) == 16  # page 1 shown, page 2 made in the background
    made = g.cache_info().made
    g.page = 1
    assert g.cache_info().made == made  # nothing new to make: the page was ready


def test_filter_by_query_string_mask_and_none(df):
    g = vk.Gallery(df, page_size=5)
    g.filter = "answer == 'bird'"
    assert g.matching == 10 and g.page_count == 2 and g.query == "answer == 'bird'"
    assert all(df["answer"].iloc[it["pos"]] == "bird" for it in g._items)
    g.page = 1
    g.filter = df["width"] > 300  # a boolean Series: back to page 0
    assert g.page == 0
    assert [it["pos"] for it in g._items] == list(np.flatnonzero(df["width"] > 300))[:5]
    g.filter = None
    assert g.matching == 30 and g.query == ""
    g.filter = np.arange(30) < 3
    assert g.matching == 3 and len(g._items) == 3


def test_filter_errors(df):
    g = vk.Gallery(df)
    with pytest.raises(ValueError, match="filter 'bogus =' failed"):
        g.filter = "bogus ="
    with pytest.raises(ValueError, match="30 booleans"):
        g.filter = [True, False]
    assert g.matching == 30  # a bad filter changes nothing
    # Typed in the front end's box: shown there, not raised.
    g.query = "no_such_column > 1"
    assert "no_such_column" in g.query_error and g.matching == 30
    g.query = "width < 200"
    assert g.query_error == "" and g.matching == 8


def test_no_match_shows_an_empty_page(df):
    g = vk.Gallery(df)
    g.filter = "width < 0"
    assert g.matching == 0 and g._items == [] and g.page_count == 1


def test_selection_by_positions_and_labels(df):
    g = vk.Gallery(df, page_size=8)
    g.selected_positions = [5, 2]  # what the front end sets on clicks
    assert g.selected == ["r2", "r5"]
    assert list(g.selection.index) == ["r2", "r5"]
    g.selected = ["r7"]
    assert g.selected_positions == [7]
    g.filter = "answer == 'bird'"  # filtering keeps the selection
    assert g.selected == ["r7"]
    with pytest.raises(KeyError, match="r99"):
        g.selected = ["r99"]


def test_broken_image_becomes_a_tile_with_its_reason(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    df = pd.DataFrame({"path": [str(bad), str(image_frame(tmp_path / "ok", 1)["path"].iloc[0])]})
    g = vk.Gallery(df)
    assert g._items[0]["error"] and g._thumbs[0] == b""
    assert g._items[1]["error"] is None and len(g._thumbs[1]) > 0


def test_image_column_and_bad_input(df):
    with pytest.raises(TypeError, match="DataFrame"):
        vk.Gallery(df["path"])
    with pytest.raises(KeyError, match="image column"):
        vk.Gallery(df[["answer"]])
    with_bytes = pd.DataFrame({"image": [Path(p).read_bytes() for p in df["path"][:3]]})
    assert len(vk.Gallery(with_bytes)._thumbs) == 3


def test_thumb_size_change_remakes_thumbnails(df):
    g = vk.Gallery(df, page_size=4, thumb_size=160)
    g.thumb_size = 48
    assert max(Image.open(io.BytesIO(g._thumbs[0])).size) <= 48


def test_repr_is_cheap(df):
    assert "Gallery" in repr(vk.Gallery(df))


def test_df_vision_gallery(df):
    g = df.vision.gallery(caption="answer", page_size=5)
    assert isinstance(g, Gallery) and g.page_count == 6 and g._items[0]["caption"] == "Cat."


def test_selected_rows_hidden_by_the_filter_are_counted_apart(tmp_path):
    from widget_images import image_frame

    df = image_frame(tmp_path / "imgs", n=6)
    g = vk.Gallery(df, caption="path")
    g.selected = ["r0", "r1", "r5"]
    assert g.selected_hidden == 0
    g.filter = "width > 160"  # r5 only
    assert g.selected_hidden == 2 and g.selected == ["r0", "r1", "r5"]
    g.selected = ["r5"]
    assert g.selected_hidden == 0
    g.filter = None
    # The tooltip starts with the whole caption, which a narrow tile may cut.
    assert all(item["title"].startswith(item["caption"] + "\n") for item in g._items)
