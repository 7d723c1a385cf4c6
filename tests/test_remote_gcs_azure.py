"""gs:// and az:// as s3:// is tested: against Google Cloud Storage's and Azure's APIs on
127.0.0.1 (gcp-storage-emulator and Azurite, started by the tests: tests/object_stores.py).

The same checks as tests/test_remote_s3.py: a prefix is listed and only each object's leading
bytes are read; the frame encodes with the options remembered for its prefix (the Azure case
failed every row: adlfs lists ``az://`` as ``abfs://``); a missing object and a forbidden one
are their rows' errors; the credentials appear in no repr or error.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest
from image_factory import photo

import visionkit as vk
import visionkit.images.remote as remote
from visionkit import ImageError
from visionkit.images.cells import read_bytes
from visionkit.images.encode import encode_series
from visionkit.images.remote_headers import HEAD_BYTES


def jpeg(seed: int, size=(900, 700)) -> bytes:
    buf = io.BytesIO()
    photo(*size, seed=seed).save(buf, "JPEG", quality=95)
    return buf.getvalue()


OBJECTS = {
    "photos/a.jpg": jpeg(1),
    "photos/sub/b.jpg": jpeg(2, (64, 48)),
    "photos/notes.txt": b"hello",
    "forbidden/c.jpg": jpeg(3, (32, 24)),
}


@pytest.fixture(params=["gs", "az"])
def store(request):
    """(scheme, bucket or container, storage_options, the store's helper) for each store."""
    if request.param == "gs":
        gcs = request.getfixturevalue("gcs")
        return "gs", gcs.make_bucket(OBJECTS), gcs.options, gcs
    azure = request.getfixturevalue("azure")
    return "az", azure.make_container(OBJECTS), azure.options, azure


@pytest.fixture
def fetched(monkeypatch):
    calls: list[tuple[str, int, int | None, int]] = []
    real = remote.fetch

    def spy(fs, path, start, end, **kw):
        data = real(fs, path, start, end, **kw)
        calls.append((path, start, end, len(data)))
        return data

    monkeypatch.setattr(remote, "fetch", spy)
    return calls


def test_a_prefix_is_listed_read_by_its_headers_and_encodes_with_its_options(store, fetched):
    scheme, name, options, _ = store
    with pytest.warns(vk.ReadImagesWarning, match="notes.txt"):
        df = vk.read_images(f"{scheme}://{name}/photos/", storage_options=options)
    assert df.path.tolist() == [
        f"{scheme}://{name}/photos/a.jpg",
        f"{scheme}://{name}/photos/sub/b.jpg",
    ]
    assert df.width.tolist() == [900, 64] and df.error.isna().all()
    assert df.bytes.tolist() == [len(OBJECTS["photos/a.jpg"]), len(OBJECTS["photos/sub/b.jpg"])]
    big = [c for c in fetched if c[0].endswith("a.jpg")]
    assert big and all(end is not None and end <= HEAD_BYTES for _, _, end, _ in big)
    assert sum(n for *_, n in big) < len(OBJECTS["photos/a.jpg"]) / 4  # headers, not images

    uris = encode_series(df.path, progress=False)  # options remembered for the prefix
    assert uris.notna().all(), uris.attrs["errors"]
    local = encode_series(pd.Series([OBJECTS["photos/a.jpg"], OBJECTS["photos/sub/b.jpg"]]))
    assert uris.tolist() == local.tolist()


def test_missing_and_forbidden_objects_are_row_errors_without_the_credentials(store):
    scheme, name, options, service = store
    cells = [
        f"{scheme}://{name}/photos/a.jpg",
        f"{scheme}://{name}/photos/gone.jpg",
        f"{scheme}://{name}/forbidden/c.jpg",
    ]
    if scheme == "az":  # Azurite checks permissions: a token that may list but not read
        sas = service.list_only_sas(name)
        reader = {"connection_string": service.connection_string(sas=sas)}
        info = vk.inspect_images(cells[:2], storage_options=options)
        denied = vk.inspect_images(cells[:1], storage_options=reader)
        errors = [*info.error.tolist(), denied.error[0]]
        with pytest.raises(ImageError, match="row 5: access denied"):
            read_bytes(cells[0], row=5, storage_options=reader)
        shown = repr(info) + repr(denied) + "".join(e or "" for e in errors)
        assert service.connection_string() not in shown and sas not in shown
        assert "AccountKey" not in shown
    else:  # the emulator checks nothing: our proxy forbids forbidden/
        info = vk.inspect_images(cells, storage_options=options)
        errors = info.error.tolist()
        with pytest.raises(ImageError, match="row 5: access denied"):
            read_bytes(cells[2], row=5, storage_options=options)
    assert errors[0] is None
    assert errors[1] == "file not found (no such object)"
    assert errors[2].startswith("access denied")
    with pytest.raises(ImageError, match="row 4: file not found"):
        read_bytes(cells[1], row=4, storage_options=options)


def test_a_forbidden_listing_names_the_url_not_the_credentials(azure):
    name = azure.make_container({"photos/a.jpg": jpeg(4, (40, 30))})
    wrong = azure.connection_string(key="V3Jvbmcga2V5IQ==" * 4)
    with pytest.raises(PermissionError) as info:
        vk.read_images(f"az://{name}/photos/", storage_options={"connection_string": wrong})
    text = str(info.value)
    assert f"az://{name}/photos/" in text and "connection_string" in text
    assert "V3Jvbmcga2V5IQ==" not in text
