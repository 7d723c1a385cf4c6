"""Every visionkit warning names the user's line (issue 18, item 20): raised on the user's own
thread, on a thread visionkit started (``ask``'s run, its pools), or in a Dask task -- where a
``distributed.LocalCluster``'s workers relay them to the client, which says each distinct one
once per call, not once per partition. ``warning.filename`` must be this file."""

from __future__ import annotations

import json
import re
import sqlite3
import warnings
from pathlib import Path

import dask.dataframe as dd
import pandas as pd
from dask_helpers import image_folder
from image_factory import photo, save

import visionkit as vk
import visionkit.dask  # registers ddf.vision
from visionkit.images.encode import encode_series
from visionkit.offline import OfflineServer

PACKAGE = Path(vk.__file__).parent
PROMPT = "Describe this image."


def said(kind: type[Warning], run) -> list[warnings.WarningMessage]:
    """Run ``run()`` recording every warning; the ones of ``kind``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [w for w in caught if issubclass(w.category, kind)]


def at_this_line(found: list[warnings.WarningMessage]) -> None:
    assert found, "no warning was said"
    for w in found:
        assert w.filename == __file__, f"{w.category.__name__} names {w.filename}:{w.lineno}"


def test_visionkit_warns_only_through_errors_warn():
    """One way to warn, so no call site can forget the user's line."""
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "errors.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bwarnings\.warn(_explicit)?\(|^\s*from warnings import", line)
    ]
    assert not offenders, f"use visionkit.errors.warn: {offenders}"


# -- the user's own thread -----------------------------------------------------------------


def test_read_images_warnings_name_the_callers_line(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    save(photo(40, 30, seed=1), folder / "a.jpg")
    (folder / "notes.txt").write_text("not an image")
    at_this_line(said(vk.ReadImagesWarning, lambda: vk.read_images(str(folder))))
    at_this_line(said(vk.ReadImagesWarning, lambda: vk.read_images(str(tmp_path / "no*.png"))))
    (tmp_path / "empty").mkdir()
    at_this_line(said(vk.ReadImagesWarning, lambda: vk.read_images(str(tmp_path / "empty"))))


def test_encode_warnings_name_the_line_calling_the_accessor(tmp_path):
    good = save(photo(40, 30, seed=2), tmp_path / "g.jpg")
    frame = pd.DataFrame({"path": [str(good), str(tmp_path / "missing.jpg")]})
    at_this_line(said(vk.EncodeWarning, lambda: frame.vision.encode(errors="coerce")))
    at_this_line(said(vk.EncodeWarning, lambda: encode_series(frame.path, errors="coerce")))


def test_the_offline_notice_names_the_line_that_asked(tmp_path, monkeypatch):
    """ask() connects for the user (default_client, deep inside visionkit)."""
    monkeypatch.delenv("VISIONKIT_REPLAY", raising=False)
    vk.reset_state()  # the notice is said once per process
    frame = pd.DataFrame({"path": [str(save(photo(40, 30, seed=3), tmp_path / "a.jpg"))]})
    at_this_line(
        said(vk.OfflineWarning, lambda: frame.vision.ask(PROMPT, cache=False, progress=False))
    )
    vk.reset_state()


# -- threads visionkit started -------------------------------------------------------------


def damage(cache: Path) -> int:
    """Change every cached answer behind its checksum's back; how many there were."""
    with sqlite3.connect(cache) as db:
        return db.execute("UPDATE answers SET answer = answer || ' (edited)'").rowcount


def test_a_cache_warning_from_asks_threads_names_the_line_that_asked(tmp_path, client):
    frame = pd.DataFrame(
        {"path": [str(save(photo(40 + i, 30, seed=i), tmp_path / f"{i}.jpg")) for i in range(3)]}
    )
    cache = tmp_path / "c.sqlite"
    frame.vision.ask(PROMPT, client=client, cache=cache, progress=False)
    assert damage(cache) == 3
    # the entries are read in the run's thread pool, not on this thread
    found = said(
        vk.CacheWarning,
        lambda: frame.vision.ask(PROMPT, client=client, cache=cache, progress=False),
    )
    at_this_line(found)
    assert len(found) == 1  # once per cache, the rest logged


def test_a_replay_warning_names_the_line_that_connects(tmp_path, client):
    frame = pd.DataFrame({"path": [str(save(photo(44, 30, seed=4), tmp_path / "a.jpg"))]})
    answers = tmp_path / "answers"
    recorder = vk.connect("offline", base_url=client.base_url, api_key="offline", record=answers)
    frame.vision.ask(PROMPT, client=recorder, cache=False, progress=False)
    store = answers / "answers.jsonl"
    record = json.loads(store.read_text())
    del record["checksum"]
    store.write_text(json.dumps(record) + "\n")
    at_this_line(said(vk.ReplayWarning, lambda: vk.connect(replay=answers)))


# -- Dask: dask's own threads, and a LocalCluster's workers --------------------------------


def non_images_in_every_partition(folder: Path, parts: int) -> Path:
    image_folder(folder, 3 * parts)
    for i in range(parts):  # files sort by name: one text file lands in each partition
        (folder / f"im{3 * i:04d}b.txt").write_text("not an image")
    return folder


def test_warnings_in_dask_threads_name_the_line_that_computes(tmp_path):
    folder = non_images_in_every_partition(tmp_path / "imgs", 3)
    ddf = vk.dask.read_images(folder, partition_size=4)
    found = said(vk.ReadImagesWarning, lambda: ddf.compute(scheduler="threads"))
    at_this_line(found)
    assert len(found) == 3  # three partitions, three different files left out


def test_a_workers_warnings_are_said_on_the_client_at_the_users_line(tmp_path, dask_client):
    folder = non_images_in_every_partition(tmp_path / "imgs", 3)
    ddf = vk.dask.read_images(folder, partition_size=4)
    found = said(vk.ReadImagesWarning, lambda: ddf.compute())
    at_this_line(found)
    texts = sorted(str(w.message) for w in found)
    assert len(texts) == 3 and len(set(texts)) == 3  # each partition's own, said once
    assert all("b.txt" in t for t in texts)

    # each partition: row "a" encodes, row "b" names a missing file -- the same warning
    cells = pd.DataFrame(
        {"path": [str(folder / "im0000.jpg"), str(tmp_path / "gone.jpg")] * 3},
        index=["a", "b"] * 3,
    )
    lazy = dd.from_pandas(cells, npartitions=3, sort=False).vision.encode(errors="coerce")
    assert lazy.npartitions == 3
    found = said(vk.EncodeWarning, lambda: lazy.compute())
    at_this_line(found)
    assert len(found) == 1, [str(w.message) for w in found]  # said once, not three times


def test_the_same_warning_from_every_partition_is_said_once_per_call(tmp_path, dask_client):
    folder = image_folder(tmp_path / "imgs", 18)
    cache = tmp_path / "c.sqlite"
    with OfflineServer() as server:
        client = vk.connect("offline", base_url=server.base_url, api_key="offline")
        ddf = vk.dask.read_images(folder, partition_size=2)  # nine partitions
        assert ddf.npartitions == 9
        first = ddf.vision.ask(PROMPT, client=client, cache=cache).compute()
        assert first.error.isna().all()
        assert damage(cache) == 18
        # every partition finds its cached answers changed: nine times the same CacheWarning,
        # said once per call, at this line
        answers: list[pd.DataFrame] = []

        def ask() -> None:
            answers.append(ddf.vision.ask(PROMPT, client=client, cache=cache).compute())

        for _ in range(2):
            found = said(vk.CacheWarning, ask)
            at_this_line(found)
            assert len(found) == 1, [str(w.message) for w in found]
            assert str(cache) in str(found[0].message)
            assert answers[-1].answer.tolist() == first.answer.tolist()  # never the edited ones
