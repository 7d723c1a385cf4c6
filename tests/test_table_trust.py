"""Tables as an attacker or a damaged download would make them: many files behind references,
damaged Parquet files, and paths inside a table that point out of its folder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_factory import photo

import visionkit as vk
from visionkit import ImageError
from visionkit.images import table_refs
from visionkit.images.cells import read_bytes
from visionkit.images.encode import EncodeWarning, encode_series

ROOT = Path(__file__).resolve().parents[1]


def png(seed: int, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    photo(*size, seed=seed).save(buf, "PNG")
    return buf.getvalue()


def struct_table(values: list[dict]) -> pa.Table:
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table({"image": pa.array(values, kind), "id": list(range(len(values)))})


# --------------------------------------------------------------------------------------------
# 10: the files behind references are bounded and closed


def test_300_parquet_files_behind_references_encode_under_a_256_descriptor_limit(tmp_path):
    """Each reference names its own Parquet file; with ``ulimit -n 256`` every row encodes,
    the files are closed when the call ends, and a plain JPEG reads after."""
    folder = tmp_path / "many"
    folder.mkdir()
    data = png(1)
    for i in range(300):
        pq.write_table(struct_table([{"bytes": data, "path": None}]), folder / f"t{i:03}.parquet")
    (tmp_path / "one.jpg").write_bytes(_jpeg())
    script = textwrap.dedent(
        f"""
        import os, resource, sys, warnings
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        import pandas as pd
        import visionkit as vk
        from visionkit.images.encode import encode_series
        from visionkit.images.table_refs import MAX_OPEN_FILES
        folder = {str(folder)!r}
        refs = [f"{{folder}}/t{{i:03}}.parquet#image[0]" for i in range(300)]
        before = len(os.listdir("/proc/self/fd"))
        warnings.simplefilter("error")
        uris = encode_series(pd.Series(refs), progress=False, workers=2)
        assert uris.notna().all(), uris.attrs["errors"]
        after = len(os.listdir("/proc/self/fd"))
        assert after <= before + 2, (before, after)  # closed when the call ended
        info = vk.inspect_images(refs)
        assert info.error.isna().all() and len(os.listdir("/proc/self/fd")) <= before + 2
        one = encode_series(pd.Series([{str(tmp_path / "one.jpg")!r}]), progress=False)
        assert one.notna().all()
        print("ok", before, after, MAX_OPEN_FILES)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


def test_open_files_are_bounded_while_a_call_reads_many(tmp_path, monkeypatch):
    data = png(2)
    refs = []
    for i in range(40):
        path = tmp_path / f"t{i}.parquet"
        pq.write_table(struct_table([{"bytes": data, "path": None}]), path)
        refs.append(f"{path}#image[0]")
    seen: list[int] = []
    real = table_refs._parquet_value

    def spy(ref):
        out = real(ref)
        seen.append(len(_open_parquet_fds(tmp_path)))
        return out

    monkeypatch.setattr(table_refs, "_parquet_value", spy)
    with table_refs.tables_call():
        assert all(read_bytes(r) == data for r in refs)
        assert max(seen) <= table_refs.MAX_OPEN_FILES
        assert len(_open_parquet_fds(tmp_path)) > 0  # kept open for the next row, in a call
    assert _open_parquet_fds(tmp_path) == []


@pytest.mark.filterwarnings("ignore:.*offline stand-in")
def test_ask_and_submit_close_the_files_behind_references_when_they_end(tmp_path):
    data = png(5)
    refs = []
    for i in range(5):
        path = tmp_path / f"t{i}.parquet"
        pq.write_table(struct_table([{"bytes": data, "path": None}]), path)
        refs.append(f"{path}#image[0]")
    df = pd.DataFrame({"image": refs})
    cache = tmp_path / "answers.sqlite"
    asked = df.vision.ask("Describe.", cache=cache, progress=False)
    assert asked.answer.notna().all()
    assert _open_parquet_fds(tmp_path) == []
    planned = df.vision.submit("Describe.", cache=tmp_path / "b.sqlite", dry_run=True)
    assert planned.error.isna().all()
    assert _open_parquet_fds(tmp_path) == []


def _open_parquet_fds(folder: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)) and target.endswith(".parquet"):
            out.append(target)
    return out


def _jpeg() -> bytes:
    buf = io.BytesIO()
    photo(64, 48, seed=3).save(buf, "JPEG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# 11: a damaged Parquet file is the rows' error, and read_images names it


@pytest.fixture
def damaged(tmp_path):
    """A good table, a truncated copy, and a file of junk named .parquet."""
    good = tmp_path / "good.parquet"
    pq.write_table(struct_table([{"bytes": png(i), "path": None} for i in range(3)]), good)
    whole = good.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole[: len(whole) // 2])
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1" + os.urandom(3000) + b"PAR1")
    return good, cut, junk


@pytest.mark.filterwarnings("ignore:.*offline stand-in")
def test_a_damaged_parquet_file_behind_a_reference_is_that_rows_error_everywhere(damaged, tmp_path):
    good, cut, junk = damaged
    refs = [f"{good}#image[0]", f"{cut}#image[1]", f"{junk}#image[0]", f"{good}#image[2]"]
    df = pd.DataFrame({"image": refs})

    with pytest.warns(EncodeWarning) as caught:
        uris = encode_series(df.image, progress=False)
    assert uris.notna().tolist() == [True, False, False, True]
    text = str(caught[0].message)
    assert f"row 1: cannot read the table {cut}" in text
    assert f"row 2: cannot read the table {junk}" in text

    info = vk.inspect_images(df.image)
    assert info.error.isna().tolist() == [True, False, False, True]
    assert str(cut) in info.error[1] and "not a Parquet file" in info.error[1]

    with pytest.raises(ImageError, match=r"row 7: cannot read the table .*junk\.parquet"):
        read_bytes(refs[2], row=7)

    cache = tmp_path / "answers.sqlite"
    asked = df.vision.ask("Describe.", cache=cache, progress=False)
    assert asked.answer.notna().tolist() == [True, False, False, True]
    assert "cut.parquet" in asked.error[1]
    planned = df.vision.submit("Describe.", cache=cache, dry_run=True, progress=False)
    assert planned.error.notna().tolist() == [False, True, True, False]
    assert "junk.parquet" in planned.error[2]


def test_read_images_names_a_damaged_table_or_leaves_it_out_of_a_glob(damaged):
    good, cut, junk = damaged
    for bad in (cut, junk):
        with pytest.raises(ValueError, match=rf"read_images: cannot read the table {bad}"):
            vk.read_images(bad, image_column="image")
    # one warning per table left out; pytest.warns(match=) would re-emit the one it does not match
    with pytest.warns(vk.ReadImagesWarning) as caught:
        df = vk.read_images(f"{good.parent}/*.parquet", image_column="image")
    messages = [str(w.message) for w in caught]
    assert any("cut.parquet" in m for m in messages), messages
    assert any("junk.parquet" in m for m in messages), messages
    assert len(df) == 3 and df.error.isna().all()


# --------------------------------------------------------------------------------------------
# 13: paths inside a table


@pytest.fixture
def private(tmp_path):
    """A private image outside the dataset's folder, and the dataset folder."""
    secret = tmp_path / "home" / "private.png"
    secret.parent.mkdir()
    secret.write_bytes(png(9))
    data = tmp_path / "download" / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "0.png").write_bytes(png(0))
    return secret, data


def test_a_table_cannot_make_visionkit_read_a_file_outside_its_folder(private, monkeypatch):
    secret, data = private
    (data / "link.png").symlink_to(secret)
    rows = [
        {"bytes": None, "path": "img/0.png"},  # relative: beside the table
        {"bytes": None, "path": str(secret)},  # absolute, elsewhere
        {"bytes": None, "path": "../../home/private.png"},  # climbs out
        {"bytes": None, "path": "link.png"},  # a link out of the folder
        {"bytes": None, "path": f"file://{secret}"},
    ]
    table = data / "train.parquet"
    pq.write_table(struct_table(rows), table)
    monkeypatch.chdir(secret.parent)  # a relative path must not be read from the cwd

    df = vk.read_images(table, image_column="image")
    assert df.path[0] == str(data / "img" / "0.png")
    assert df.error[0] is None and df.width[0] == 40
    for i in (1, 2, 3, 4):
        assert df.error[i].startswith("the table names a file outside its folder"), df.error[i]
        assert df.path[i] == f"{table}#image[{i}]"  # never the private path itself
    with pytest.warns(EncodeWarning):
        uris = encode_series(df.path, progress=False)
    assert uris.notna().tolist() == [True, False, False, False, False]
    for i in range(1, 5):  # the references, resolved later, refuse the same way
        with pytest.raises(ImageError, match="outside its folder"):
            read_bytes(f"{table}#image[{i}]")
    assert read_bytes(f"{table}#image[0]") == (data / "img" / "0.png").read_bytes()

    trusted = vk.read_images(table, image_column="image", confine_paths=False)
    assert trusted.error.isna().all()
    assert trusted.path[1] == str(secret)


def test_string_paths_in_a_table_are_relative_to_it_and_urls_are_kept(private, monkeypatch):
    secret, data = private
    table = data / "list.parquet"
    paths = ["img/0.png", str(secret), "https://example.invalid/a.png"]
    pq.write_table(pa.table({"file": paths}), table)
    monkeypatch.chdir(secret.parent)
    df = vk.read_images(table, image_column="file")
    assert df.path.tolist()[0] == str(data / "img" / "0.png") and df.error[0] is None
    assert "outside its folder" in df.error[1] and str(secret) not in df.path[1]
    assert df.path[2] == "https://example.invalid/a.png"  # read wherever it points
    assert df.error[2].startswith("download failed")


def test_table_paths_on_s3_stay_in_the_tables_prefix(s3, tmp_path):
    image = png(4)
    rows = [
        {"bytes": None, "path": "img/0.png"},
        {"bytes": None, "path": "/etc/hostname"},
        {"bytes": None, "path": "../private/x.png"},
    ]
    local = tmp_path / "t.parquet"
    pq.write_table(struct_table(rows), local)
    bucket = s3.make_bucket(
        {"data/t.parquet": local.read_bytes(), "data/img/0.png": image, "private/x.png": image}
    )
    df = vk.read_images(
        f"s3://{bucket}/data/t.parquet", image_column="image", storage_options=s3.options
    )
    assert df.path[0] == f"s3://{bucket}/data/img/0.png" and df.error[0] is None
    assert df.width[0] == 40
    assert "outside its folder" in df.error[1] and "outside its folder" in df.error[2]
    assert read_bytes(df.path[0]) == image
