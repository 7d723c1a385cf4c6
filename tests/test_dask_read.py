"""vk.dask.read_images and ddf.vision's inspect / estimate_tokens / encode against pandas'."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pandas as pd
import pytest
from dask_helpers import image_folder, jpeg

import visionkit as vk
import visionkit.dask  # registers ddf.vision


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Values as Python objects: Dask turns object text into pyarrow strings (README)."""
    return df.astype(object).where(df.notna(), None)


def test_read_images_partitions_a_folder_like_read_images(tmp_path, dask_client):
    folder = image_folder(tmp_path / "imgs", 23)
    (folder / "notes.txt").write_text("not an image")  # left out, as read_images does
    ddf = vk.dask.read_images(folder, partition_size=10)
    assert ddf.npartitions == 3
    with pytest.warns(vk.ReadImagesWarning, match="notes.txt"):  # said on the client, as below
        got = ddf.compute()
    with pytest.warns(vk.ReadImagesWarning):
        want = vk.read_images(folder)
    assert list(got.columns) == list(want.columns)
    assert len(got) == 23 and got.index.is_unique
    pd.testing.assert_frame_equal(
        _plain(got.reset_index(drop=True)), _plain(want.reset_index(drop=True))
    )
    assert [str(t) for t in ddf.dtypes[["width", "height", "bytes"]]] == ["Int64"] * 3


def test_estimate_inspect_and_encode_match_the_pandas_accessor(tmp_path, dask_client):
    folder = image_folder(tmp_path / "imgs", 12)
    df = vk.read_images(folder)
    ddf = vk.dask.read_images(folder, partition_size=5)
    tokens = ddf.vision.estimate_tokens()
    assert tokens.dtype == "Int64" and tokens.name == "estimated_tokens"
    pd.testing.assert_series_equal(
        tokens.compute().reset_index(drop=True), df.vision.estimate_tokens()
    )
    inspected = ddf[["path"]].vision.inspect().compute()
    assert inspected["width"].tolist() == df["width"].tolist()
    uris = ddf.vision.encode(max_side=32).compute()
    assert uris.name == "data_uri"
    assert uris.tolist() == df.vision.encode(max_side=32, progress=False).tolist()
    assert uris.str.startswith("data:image/").all()


def test_read_images_on_s3_keeps_credentials_out_of_the_graph(s3, dask_client):
    bucket = s3.make_bucket({f"photos/im{i}.jpg": jpeg(i) for i in range(7)})
    options = {**s3.options, "secret": "s3-secret-value-123"}
    s3.set_auth(False)
    ddf = vk.dask.read_images(f"s3://{bucket}/photos/", partition_size=3, storage_options=options)
    graph = pickle.dumps(dict(ddf.__dask_graph__()))
    assert b"s3-secret-value-123" not in graph
    got = ddf.compute()
    assert len(got) == 7 and got["error"].isna().all()
    assert sorted(got["width"].tolist()) == sorted(64 + i for i in range(7))
    uris = ddf.vision.encode().compute()  # the workers read the objects with the options
    assert uris.notna().all()


def test_a_missing_extra_names_the_install_command():
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "try:\n    import visionkit.dask\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'visionkit[dask]'" in out.stdout
