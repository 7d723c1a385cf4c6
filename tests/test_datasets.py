"""The sample images in ``datasets/images/`` agree with the manifest and cover the tiers.

Pillow, pandas and the standard library check the files; the last test reads the folder with
visionkit, as every example does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageOps

DATASETS = Path(__file__).resolve().parents[1] / "datasets" / "images"
MANIFEST = DATASETS.parent / "manifest.csv"
COLUMNS = ["file", "source", "licence", "label", "width", "height", "notes"]
FORMAT_BY_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".gif": "GIF"}
LABELS = {"person", "animal", "food", "object", "space", "texture"}
MAX_TOTAL_BYTES = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    return pd.read_csv(MANIFEST, dtype={"width": int, "height": int}, keep_default_na=False)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with open(MANIFEST, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _image_files() -> list[Path]:
    return sorted(p for p in DATASETS.iterdir() if not p.name.startswith("."))


def _tier(width: int, height: int) -> str:
    longest = max(width, height)
    if longest < 560:
        return "small"
    if longest <= 1120:
        return "medium"
    return "large"


def test_manifest_columns(rows):
    with open(MANIFEST, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == COLUMNS
    assert rows, "manifest is empty"


def test_manifest_lists_exactly_the_files_present(manifest):
    listed = list(manifest["file"])
    assert len(listed) == len(set(listed)), "duplicate rows in manifest"
    assert all("/" not in f and "\\" not in f for f in listed)
    assert sorted(listed) == [p.name for p in _image_files()]


def test_count_and_total_size(manifest):
    assert 15 <= len(manifest) <= 30
    total = sum((DATASETS / f).stat().st_size for f in manifest["file"])
    assert total <= MAX_TOTAL_BYTES


@pytest.mark.parametrize("path", _image_files(), ids=lambda p: p.name)
def test_file_opens_and_format_matches_extension(path):
    assert path.suffix.lower() in FORMAT_BY_SUFFIX, f"unexpected file type: {path.name}"
    with Image.open(path) as im:
        assert im.format == FORMAT_BY_SUFFIX[path.suffix.lower()]
        im.load()
    with Image.open(path) as im:
        im.verify()


def test_manifest_size_is_displayed_size(manifest):
    for row in manifest.itertuples():
        with Image.open(DATASETS / row.file) as im:
            shown = ImageOps.exif_transpose(im)
            assert (row.width, row.height) == shown.size, row.file


def test_every_tier_is_present(manifest):
    tiers = {_tier(w, h) for w, h in zip(manifest["width"], manifest["height"], strict=True)}
    assert tiers == {"small", "medium", "large"}
    # both sides under 560 px, strictly
    assert ((manifest["width"] < 560) & (manifest["height"] < 560)).any()


def test_shapes_non_square_and_extreme_aspect(manifest):
    w, h = manifest["width"], manifest["height"]
    assert (w > h).any(), "no landscape image"
    assert (h > w).any(), "no portrait image"
    assert (w == h).any(), "no square image"
    aspect = pd.concat([w / h, h / w], axis=1).max(axis=1)
    assert (aspect >= 4).any(), "no extreme aspect ratio (>= 4:1)"


def test_all_formats_present(manifest):
    counts = manifest["file"].map(lambda f: FORMAT_BY_SUFFIX[Path(f).suffix.lower()]).value_counts()
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        assert counts.get(fmt, 0) >= 3, f"fewer than 3 {fmt} files"


def test_licence_label_source_not_empty(manifest):
    for col in ("source", "licence", "label"):
        assert (manifest[col].str.strip() != "").all(), f"empty {col}"
    assert set(manifest["label"]) <= LABELS
    assert 4 <= manifest["label"].nunique() <= 6


def test_special_images_documented(manifest):
    modes = {}
    orientations = {}
    for row in manifest.itertuples():
        with Image.open(DATASETS / row.file) as im:
            modes[row.file] = im.mode
            orientations[row.file] = im.getexif().get(0x0112)
    notes = dict(zip(manifest["file"], manifest["notes"], strict=True))

    rotated = [f for f, o in orientations.items() if o not in (None, 1)]
    assert any(f.endswith((".jpg", ".jpeg")) for f in rotated), "no JPEG with EXIF Orientation"
    for f in rotated:
        assert "orientation" in notes[f].lower()
        with Image.open(DATASETS / f) as im:
            stored = im.size
        row = manifest.set_index("file").loc[f]
        assert (row["width"], row["height"]) == (stored[1], stored[0]), f

    rgba_png = [f for f, m in modes.items() if m == "RGBA" and f.endswith(".png")]
    assert rgba_png, "no RGBA PNG"
    assert all("alpha" in notes[f].lower() for f in rgba_png)
    with Image.open(DATASETS / rgba_png[0]) as im:
        lo, hi = im.getchannel("A").getextrema()
    assert lo < 255 and hi == 255, "alpha channel is not actually used"

    grey = [f for f, m in modes.items() if m == "L"]
    assert grey, "no greyscale (L) image"
    assert all("greyscale" in notes[f].lower() for f in grey)


def test_animated_gifs(manifest):
    frames = {}
    for f in manifest["file"]:
        if f.endswith(".gif"):
            with Image.open(DATASETS / f) as im:
                frames[f] = getattr(im, "n_frames", 1)
    animated = [f for f, n in frames.items() if n > 1]
    assert animated, "no animated GIF"
    assert all(2 <= frames[f] <= 3 for f in animated)


def test_the_sample_folder_reads_clean():
    """Every example reads this folder: it holds the images alone, so ``read_images`` has
    nothing to leave out and says nothing (its one warning then means something)."""
    import warnings

    import visionkit as vk

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = vk.read_images(str(DATASETS))
    assert len(df) == len(_image_files()) and df["error"].isna().all()
