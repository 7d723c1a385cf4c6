"""Image columns in tables: Parquet files (local and on S3), Arrow binary/struct columns, and
Hugging Face ``datasets.Dataset`` objects built here (no hub)."""

from __future__ import annotations

import io

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_factory import photo
from PIL import Image

import visionkit as vk
import visionkit.images.table_refs as tables
from visionkit import ImageError
from visionkit.images.cells import read_bytes
from visionkit.images.encode import EncodeWarning, encode_series
from visionkit.images.thumbnails import thumbnail


def encoded(seed: int, size=(64, 48), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    photo(*size, seed=seed).save(buf, fmt)
    return buf.getvalue()


IMAGES = [encoded(i, (60 + 10 * i, 40), "JPEG" if i % 2 else "PNG") for i in range(7)]
LABELS = ["cat", "dog", "cat", "bird", "dog", "cat", "bird"]


@pytest.fixture(scope="module")
def dataset() -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    rows = {
        "image": [{"bytes": b, "path": f"img{i}.png"} for i, b in enumerate(IMAGES)],
        "label": LABELS,
    }
    return datasets.Dataset.from_dict(rows, features=features)


def test_a_dataset_reads_without_writing_images_and_keeps_its_columns(dataset, tmp_path):
    df = vk.read_images(dataset, image_column="image")
    assert df.width.tolist() == [60 + 10 * i for i in range(7)]
    assert df.format.tolist() == ["png", "jpeg"] * 3 + ["png"]
    assert df.label.tolist() == LABELS
    assert df.bytes.tolist() == [len(b) for b in IMAGES]
    assert df.path[3].endswith("#image[3]") and df.path[3].startswith("dataset:")
    assert read_bytes(df.path[3]) == IMAGES[3]
    # the default column rule finds "image" in a dataset too
    assert vk.read_images(dataset).path.tolist() == df.path.tolist()

    # results written next to it hold references, not a second copy of the images
    out = tmp_path / "labels.parquet"
    df.to_parquet(out)
    written = out.read_bytes()
    assert out.stat().st_size < sum(map(len, IMAGES)) / 2
    assert all(img[100:140] not in written for img in IMAGES)


def test_dataset_references_follow_select_and_shuffle(dataset):
    picked = dataset.select([5, 1])
    df = vk.read_images(picked, image_column="image")
    assert df.label.tolist() == ["cat", "dog"]
    assert [read_bytes(p) for p in df.path] == [IMAGES[5], IMAGES[1]]


@pytest.mark.filterwarnings("ignore:.*offline stand-in")
def test_references_encode_show_and_ask_like_the_bytes_they_point_at(dataset, tmp_path):
    df = vk.read_images(dataset, image_column="image")
    uris = encode_series(df.path, progress=False)
    direct = encode_series(pd.Series(IMAGES), progress=False)
    assert uris.tolist() == direct.tolist()
    thumb = Image.open(io.BytesIO(thumbnail(df.path[2], thumb_size=32)))
    assert max(thumb.size) == 32
    assert "<img" in df.vision.show(n=3)._repr_html_()
    result = df.vision.ask("Describe.", cache=tmp_path / "c.sqlite", progress=False)
    assert result.answer.notna().all()


def test_a_reference_to_a_dataset_from_another_process_says_so(dataset, monkeypatch):
    df = vk.read_images(dataset, image_column="image")
    monkeypatch.setattr(tables, "_DATASETS", {})
    with pytest.raises(ImageError, match="another Python process"):
        read_bytes(df.path[0], row=0)


@pytest.fixture
def parquet_files(dataset, tmp_path):
    """The dataset as two Parquet files, the second with row groups of two rows."""
    first = tmp_path / "data" / "train-00000.parquet"
    first.parent.mkdir()
    dataset.select(range(3)).to_parquet(str(first))
    table = dataset.select(range(3, 7)).with_format("arrow")[:]
    pq.write_table(table, tmp_path / "data" / "train-00001.parquet", row_group_size=2)
    return tmp_path / "data"


def test_parquet_files_by_glob(parquet_files, monkeypatch):
    df = vk.read_images(f"{parquet_files}/*.parquet", image_column="image")
    assert df.label.tolist() == LABELS
    assert df.path[4] == f"{parquet_files}/train-00001.parquet#image[1]"
    assert df.width.tolist() == [60 + 10 * i for i in range(7)]

    loads: list[tuple] = []
    real = tables._CACHE.get

    def spy(key, load):
        def counted():
            loads.append(key)
            return load()

        return real(key, counted)

    tables._CACHE.clear()
    monkeypatch.setattr(tables._CACHE, "get", spy)
    assert [read_bytes(p) for p in df.path] == IMAGES
    # each row group is read once for seven rows in order: one for file 0, two for file 1
    assert [(k[0].rsplit("/", 1)[1], k[1]) for k in loads] == [
        ("train-00000.parquet", 0),
        ("train-00001.parquet", 0),
        ("train-00001.parquet", 1),
    ]


def test_binary_and_path_columns(tmp_path):
    paths = []
    for i, data in enumerate(IMAGES[:3]):
        path = tmp_path / f"p{i}.img"
        path.write_bytes(data)
        paths.append(str(path))
    table = pa.table(
        {
            "raw": pa.array(IMAGES[:3], pa.binary()),
            "file": pa.array(paths),
            "id": [10, 11, 12],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    raw = vk.read_images(tmp_path / "t.parquet", image_column="raw")
    assert raw.width.tolist() == [60, 70, 80]
    assert raw.id.tolist() == [10, 11, 12]
    assert "file" in raw.columns  # a string column comes along
    assert read_bytes(raw.path[1]) == IMAGES[1]
    files = vk.read_images(str(tmp_path / "t.parquet"), image_column="file")
    assert files.path.tolist() == paths  # path cells are read as they are
    assert files.width.tolist() == [60, 70, 80]


def test_struct_cells_from_pandas_are_image_cells(parquet_files):
    frame = pd.read_parquet(parquet_files / "train-00000.parquet")
    assert isinstance(frame.image[0], dict)
    info = vk.inspect_images(frame.image)
    assert info.width.tolist() == [60, 70, 80]
    assert info.path.tolist() == ["img0.png", "img1.png", "img2.png"]
    uris = frame.vision.encode(image_column="image", progress=False)
    assert uris.notna().all()


def test_table_errors(parquet_files, tmp_path):
    with pytest.raises(KeyError, match="no column 'picture'"):
        vk.read_images(parquet_files / "train-00000.parquet", image_column="picture")
    with pytest.raises(FileNotFoundError):
        vk.read_images(tmp_path / "missing.parquet", image_column="image")
    with pytest.raises(ImageError, match="past the end"):
        read_bytes(f"{parquet_files}/train-00000.parquet#image[99]")
    broken = pa.table({"image": pa.array([b"not an image", None], pa.binary())})
    pq.write_table(broken, tmp_path / "broken.parquet")
    df = vk.read_images(tmp_path / "broken.parquet", image_column="image")
    assert df.error.tolist() == ["not an image (looks like text)", "no image (missing value)"]
    with pytest.warns(EncodeWarning, match="row 1: no image"):
        encode_series(df.path, progress=False)


def test_parquet_on_s3(s3, dataset, tmp_path):
    local = tmp_path / "train.parquet"
    pq.write_table(dataset.with_format("arrow")[:], local, row_group_size=3)
    bucket = s3.make_bucket({"data/train.parquet": local.read_bytes()})
    df = vk.read_images(
        f"s3://{bucket}/data/*.parquet", image_column="image", storage_options=s3.options
    )
    assert df.path[6] == f"s3://{bucket}/data/train.parquet#image[6]"
    assert df.label.tolist() == LABELS
    tables._CACHE.clear()
    assert read_bytes(df.path[6]) == IMAGES[6]
    uris = encode_series(df.path, progress=False)
    assert uris.notna().all()
