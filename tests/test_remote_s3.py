"""Images in an S3 bucket, against a real S3 API on 127.0.0.1 (moto's server, through s3fs)."""

from __future__ import annotations

import io
import sys

import pandas as pd
import pytest
from image_factory import animated_gif, photo
from PIL import Image

import visionkit as vk
import visionkit.images.remote as remote
from visionkit import ImageError
from visionkit.images.cells import read_bytes
from visionkit.images.encode import EncodeWarning, encode_series
from visionkit.images.read import ReadImagesWarning
from visionkit.images.remote_headers import HEAD_BYTES
from visionkit.images.thumbnails import thumbnail


def jpeg(seed: int = 0, size=(800, 600), exif_text: int = 0, orientation: int = 1) -> bytes:
    im = photo(*size, seed=seed)
    exif = im.getexif()
    exif[0x0112] = orientation
    if exif_text:
        exif[0x010E] = "x" * exif_text  # ImageDescription: a long EXIF block
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=90)
    return buf.getvalue()


def png(size=(300, 200)) -> bytes:
    buf = io.BytesIO()
    photo(*size).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bucket(s3, tmp_path_factory):
    gif = animated_gif(tmp_path_factory.mktemp("gif") / "a.gif").read_bytes()
    objects = {
        "photos/img2.jpg": jpeg(2, orientation=6),
        "photos/img10.jpg": jpeg(10),
        "photos/long-exif.jpg": jpeg(3, exif_text=60_000),
        "photos/sub/chart.png": png(),
        "photos/sub/anim.gif": gif,
        "photos/noextension": jpeg(4, size=(64, 48)),
        "photos/README": b"not an image at all\n",
        "photos/notes.txt": b"hello",
        "photos/.hidden.jpg": jpeg(5),
        "photos/broken.jpg": b"\xff\xd8\xff\xe0garbage",
        "other/x.jpg": jpeg(6, size=(40, 30)),
    }
    name = s3.make_bucket(objects)
    return name, objects


@pytest.fixture
def fetched(monkeypatch):
    """Every ranged read the header reader makes: (path, start, end, bytes returned)."""
    calls: list[tuple[str, int, int | None, int]] = []
    real = remote.fetch

    def spy(fs, path, start, end, **kw):
        data = real(fs, path, start, end, **kw)
        calls.append((path, start, end, len(data)))
        return data

    monkeypatch.setattr(remote, "fetch", spy)
    return calls


def test_read_images_lists_a_prefix_and_reads_only_headers(s3, bucket, fetched):
    name, objects = bucket
    with pytest.warns(ReadImagesWarning) as caught:
        df = vk.read_images(f"s3://{name}/photos/", storage_options=s3.options)
    said = [str(w.message) for w in caught]
    assert any("1 remote object(s) named like non-images: notes.txt" in m for m in said)
    assert any("left out 1 file that is not an image: README" in m for m in said)
    base = f"s3://{name}/photos/"
    assert df.path.tolist() == [
        base + p
        for p in [
            "broken.jpg",
            "img2.jpg",
            "img10.jpg",
            "long-exif.jpg",
            "noextension",
            "sub/anim.gif",
            "sub/chart.png",
        ]
    ]
    row = df.set_index("path").loc
    assert (row[base + "img2.jpg", "width"], row[base + "img2.jpg", "height"]) == (600, 800)
    assert row[base + "long-exif.jpg", "width"] == 800
    assert row[base + "noextension", "format"] == "jpeg"
    assert row[base + "sub/anim.gif", "frames"] == 3
    assert row[base + "sub/chart.png", "format"] == "png"
    assert "JPEG" in row[base + "broken.jpg", "error"]
    for path in df.path:
        assert row[path, "bytes"] == len(objects[path.removeprefix(f"s3://{name}/")])

    read = {}
    for path, _start, _end, n in fetched:
        read[path] = read.get(path, 0) + n
    jpg = f"{name}/photos/img10.jpg"
    assert read[jpg] == HEAD_BYTES < len(objects["photos/img10.jpg"])
    assert sum(1 for c in fetched if c[0] == jpg) == 1  # one ranged GET
    # the 60 KB EXIF block is read (Pillow parses it), the image data after it is not
    long = f"{name}/photos/long-exif.jpg"
    assert [c[1] for c in fetched if c[0] == long] == [0, HEAD_BYTES]
    assert 60_000 < read[long] < len(objects["photos/long-exif.jpg"]) / 1.5
    assert f"{name}/photos/notes.txt" not in read  # skipped by its extension, never fetched
    assert f"{name}/photos/README" in read  # no extension: its first bytes tell (not an image)


def test_globs_and_recursion(s3, bucket):
    name, _ = bucket
    jpgs = vk.read_images(f"s3://{name}/photos/*.jpg", storage_options=s3.options)
    assert [p.rsplit("/", 1)[1] for p in jpgs.path] == [
        "broken.jpg",
        "img2.jpg",
        "img10.jpg",
        "long-exif.jpg",
    ]
    deep = vk.read_images(f"s3://{name}/photos/**/*.png", storage_options=s3.options)
    assert deep.path.str.endswith("sub/chart.png").tolist() == [True]
    with pytest.warns(ReadImagesWarning) as caught:
        flat = vk.read_images(f"s3://{name}/photos/", recursive=False, storage_options=s3.options)
    assert sorted(str(w.message).split(": ")[1].split(" (")[0] for w in caught) == [
        "README",
        "notes.txt",
    ]
    assert not flat.path.str.contains("/sub/").any()
    with pytest.warns(ReadImagesWarning, match="matches no file"):
        assert vk.read_images(f"s3://{name}/photos/*.webp", storage_options=s3.options).empty
    with pytest.raises(FileNotFoundError, match="no such object or prefix"):
        vk.read_images(f"s3://{name}/nothing-here/", storage_options=s3.options)


def test_cells_read_with_remembered_options_encode_like_local_bytes(s3, bucket):
    name, objects = bucket
    df = vk.read_images(f"s3://{name}/photos/*.jpg", storage_options=s3.options)
    # the options were remembered for the bucket: later reads of these cells need no options
    with pytest.warns(EncodeWarning, match="row 0: truncated JPEG"):
        remote_uris = encode_series(df.path, progress=False)
    assert remote_uris.isna().tolist() == [True, False, False, False]  # broken.jpg
    local = [objects[p.removeprefix(f"s3://{name}/")] for p in df.path]
    with pytest.warns(EncodeWarning):
        local_uris = encode_series(pd.Series(local), progress=False)
    assert remote_uris.tolist()[1:] == local_uris.tolist()[1:]
    other = read_bytes(f"s3://{name}/other/x.jpg")  # another prefix of the same bucket
    assert other == objects["other/x.jpg"]
    assert Image.open(
        io.BytesIO(thumbnail(f"s3://{name}/photos/img2.jpg", thumb_size=64))
    ).size == (48, 64)


def test_missing_and_forbidden_objects_are_row_errors(s3, bucket):
    name, _ = bucket
    cells = pd.Series([f"s3://{name}/photos/img2.jpg", f"s3://{name}/photos/gone.jpg"])
    info = vk.inspect_images(cells, storage_options=s3.options)
    assert info.error.tolist()[0] is None
    assert info.error[1] == "file not found (no such object)"
    with pytest.raises(ImageError, match=r"row 1: file not found"):
        read_bytes(cells[1], row=1)

    keys = s3.user_allowed(name, "photos/")
    s3.set_auth(True)
    try:
        options = s3.options | keys
        ok = read_bytes(f"s3://{name}/photos/img2.jpg", storage_options=options)
        assert ok.startswith(b"\xff\xd8")
        with pytest.raises(ImageError, match="access denied"):
            read_bytes(f"s3://{name}/other/x.jpg", storage_options=options)
        df = vk.inspect_images([f"s3://{name}/other/x.jpg"], storage_options=options)
        assert df.error[0].startswith("access denied")
        assert keys["secret"] not in repr(df) and keys["secret"] not in df.error[0]
    finally:
        s3.set_auth(False)


@pytest.mark.filterwarnings("ignore:.*offline stand-in")
def test_credentials_never_appear_in_errors_reprs_or_the_answer_cache(s3, bucket, tmp_path):
    name, _ = bucket
    secret = "s3cr3t-" + "9" * 20
    remote.set_storage_options(f"s3://{name}/", s3.options | {"secret": secret})
    try:
        df = vk.read_images([f"s3://{name}/photos/img2.jpg", f"s3://{name}/photos/gone.jpg"])
        assert df.error[1] == "file not found (no such object)"
        assert secret not in repr(df) and secret not in df.to_csv()
        cache = tmp_path / "answers.sqlite"
        result = df.vision.ask("Describe.", cache=cache, progress=False)
        assert result.answer.notna().tolist() == [True, False]
        assert "file not found" in result.error[1]
        assert secret.encode() not in cache.read_bytes()
        assert secret not in repr(result) and secret not in str(result.attrs)
    finally:
        remote.set_storage_options(f"s3://{name}/", s3.options)


@pytest.mark.filterwarnings("ignore:.*offline stand-in")
def test_the_answer_cache_keys_on_content_not_on_the_url(s3, tmp_path):
    data = jpeg(7, size=(120, 90))
    name = s3.make_bucket({"a/one.jpg": data, "b/same.jpg": data})
    cache = tmp_path / "answers.sqlite"
    first = vk.read_images(f"s3://{name}/a/", storage_options=s3.options)
    a = first.vision.ask("Describe.", cache=cache, progress=False)
    second = pd.DataFrame({"image": [f"s3://{name}/b/same.jpg"]})
    b = second.vision.ask("Describe.", cache=cache, progress=False)
    assert a.cached.tolist() == [False] and b.cached.tolist() == [True]
    assert a.answer[0] == b.answer[0]


def test_a_missing_extra_names_the_install_command(monkeypatch):
    import fsspec

    registry = sys.modules["fsspec.registry"]._registry  # fsspec.registry is a mappingproxy
    assert fsspec.registry is not registry
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed
    monkeypatch.delitem(registry, "gs", raising=False)
    monkeypatch.delitem(registry, "gcs", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'visionkit\[gcs\]'"):
        vk.read_images("gs://some-bucket/photos/")
    with pytest.raises(ImportError, match=r"pip install 'visionkit\[gcs\]'"):
        read_bytes("gs://some-bucket/photos/a.jpg")


def test_the_cli_reads_a_bucket_with_credentials_from_the_environment(s3, bucket, monkeypatch):
    from visionkit.cli import main

    name, _ = bucket
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    for prefix in list(remote._OPTIONS):
        monkeypatch.delitem(remote._OPTIONS, prefix)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["estimate", f"s3://{name}/photos/*.jpg"]) == 0
    text = out.getvalue()
    assert "img10.jpg" in text and "3 images" in text


def test_an_unknown_scheme_is_that_rows_error():
    with pytest.warns(EncodeWarning, match="row 1: nosuchfs:// is not a filesystem"):
        uris = encode_series(pd.Series([png(), "nosuchfs://bucket/a.png"]), progress=False)
    assert uris.notna().tolist() == [True, False]
    info = vk.inspect_images(["nosuchfs://bucket/a.png"])
    assert info.error[0] == "cannot open: nosuchfs:// is not a filesystem fsspec knows"


def test_a_forbidden_prefix_names_the_url_and_what_is_missing(s3):
    name = s3.make_bucket({"photos/a.jpg": jpeg(1, size=(40, 30)), "other/x.jpg": b"x"})
    secret = "wr0ng-" + "7" * 30
    keys = s3.user_allowed(name, "photos/")  # may read photos/, may list the bucket
    s3.set_auth(True)
    try:
        options = s3.options | {"key": "AKIANOSUCHKEY000", "secret": secret}
        with pytest.raises(PermissionError) as info:
            vk.read_images(f"s3://{name}/photos/", storage_options=options)
        text = str(info.value)
        assert f"access denied listing s3://{name}/photos/" in text
        assert "storage_options={'key': ..., 'secret': ...}" in text
        assert "AWS_ACCESS_KEY_ID" in text and secret not in text
        with pytest.raises(PermissionError, match=f"listing s3://{name}/other/x.jpg"):
            vk.read_images(f"s3://{name}/other/x.jpg", storage_options=s3.options | keys)
    finally:
        s3.set_auth(False)


def test_public_url_drops_credentials():
    assert remote.public_url("s3://AKIA:s3cret@bucket/a/b.jpg") == "s3://bucket/a/b.jpg"
    assert remote.public_url("az://c/p/x.png?sig=abc&se=1") == "az://c/p/x.png"
    assert remote.public_url("gs://bucket/") == "gs://bucket/"


def test_an_object_over_the_cap_is_refused_before_its_body_is_read(s3, fetched):
    big = b"\xff\xd8\xff" + bytes(1_500_000)
    name = s3.make_bucket({"big/a.jpg": big, "big/b.jpg": big[:1000]})
    cap = 1_000_000
    with pytest.raises(ImageError, match=r"object over the 1,000,000 bytes cap \(1,500,003"):
        read_bytes(f"s3://{name}/big/a.jpg", max_bytes=cap, storage_options=s3.options)
    assert fetched == []  # its size came first (HEAD): no byte of the body was asked for
    assert read_bytes(f"s3://{name}/big/b.jpg", max_bytes=cap, storage_options=s3.options)
    assert [c[0].rsplit("/", 1)[1] for c in fetched] == ["b.jpg"]
    fetched.clear()
    listed = vk.read_images(f"s3://{name}/big/", storage_options=s3.options)  # sizes listed
    assert listed.bytes.tolist() == [1_500_003, 1000]
    fetched.clear()
    with pytest.raises(ImageError, match="object over"):
        read_bytes(listed.path[0], max_bytes=cap)
    assert fetched == []
