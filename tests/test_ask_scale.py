"""What keeps a run cheap per row at scale, checked against the stand-in over real HTTP: the
digest index (an unchanged file is not read again; any change is noticed), cached rows looked
up in bulk, a recording written a chunk at a time, and nothing paid lost when a run is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from PIL import Image

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.query.cache import Cache
from visionkit.query.replay import FILENAME, Recording

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600 * 10**9


class Opens:
    """Counts the files this process opens whose path ends with one of ``suffixes`` (Python's
    audit hook for ``open``: a real observation of the run, nothing replaced)."""

    hooked: ClassVar[list[Opens]] = []

    def __init__(self, *suffixes: str) -> None:
        self.suffixes = suffixes
        self.seen: list[tuple[str, str]] = []
        self.on = False
        if not Opens.hooked:
            sys.addaudithook(_audit)
        Opens.hooked.append(self)

    def __enter__(self) -> Opens:
        self.on = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.on = False

    def count(self, mode: str | None = None) -> int:
        return sum(1 for _, m in self.seen if mode is None or mode in m)


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not Opens.hooked:
        return
    path, mode = str(args[0]), str(args[1])
    for opens in Opens.hooked:
        if opens.on and path.endswith(opens.suffixes):
            opens.seen.append((path, mode))


def _age(paths: list[str], hours: float = 1.0) -> None:
    """Make files look written an hour ago (a digest is remembered only for settled files)."""
    then = time.time_ns() - int(hours * HOUR)
    for p in paths:
        os.utime(p, ns=(then, then))


def _distinct(folder: Path, n: int) -> list[str]:
    """``n`` tiny PNGs with distinct content (the row number in the first pixels)."""
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        im = Image.new("RGB", (8, 8), (200, 100, 50))
        im.putpixel((0, 0), (i % 256, i // 256 % 256, 7))
        paths.append(str(folder / f"img{i:05d}.png"))
        im.save(paths[-1])
    return paths


def _ask(frame, client, cache, **options):
    return frame.vision.ask("Describe.", client=client, cache=cache, progress=False, **options)


def test_an_unchanged_file_is_not_read_again_to_find_its_answer(tmp_path, server, client, cache):
    paths = make_images(tmp_path / "imgs", 5)
    _age(paths)
    frame = pd.DataFrame({"path": paths})
    first = _ask(frame, client, cache)
    assert first["error"].isna().all() and first.attrs["usage"]["requests"] == 5
    with Opens(".png") as opens:
        again = _ask(frame, client, cache)
    assert again["cached"].all() and again["answer"].tolist() == first["answer"].tolist()
    assert opens.count() == 0, opens.seen  # every digest came from the index: no file opened
    assert server.server.stats.chat_requests == 5


def test_any_change_to_a_file_is_noticed(tmp_path, server, client, cache):
    """Edited in place with the same size, with another size, or with its old mtime put back:
    each is read again, and its new content asked about (one request each)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(4):  # BMP: a pixel changed in place keeps the file's size
        paths.append(str(folder / f"img{i}.bmp"))
        Image.new("RGB", (48, 32), (40 * i, 90, 200)).save(paths[-1])
    _age(paths, hours=2)
    frame = pd.DataFrame({"path": paths})
    assert _ask(frame, client, cache).attrs["usage"]["requests"] == 4
    sizes = [os.path.getsize(p) for p in paths]

    def repaint(path: str, colour: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> None:
        with Image.open(path) as im:
            im.load()
        im = im.resize(size)
        im.paste(colour, (0, 0, 8, 8))
        im.save(path)

    # same size, new mtime (an hour ago, still settled)
    repaint(paths[0], (1, 2, 3))
    _age([paths[0]])
    # a different size
    repaint(paths[1], (4, 5, 6), size=(50, 30))
    _age([paths[1]])
    # same size and the old mtime put back: only the ctime (and the content) differ
    old = os.stat(paths[2])
    repaint(paths[2], (7, 8, 9))
    os.utime(paths[2], ns=(old.st_atime_ns, old.st_mtime_ns))
    now = [os.stat(p) for p in paths]
    assert [now[0].st_size, now[2].st_size] == [sizes[0], sizes[2]] and now[1].st_size != sizes[1]
    assert now[2].st_mtime_ns == old.st_mtime_ns
    with Opens(".bmp") as opens:
        again = _ask(frame, client, cache)
    assert again["error"].isna().all(), again["error"].tolist()
    assert again["cached"].tolist() == [False, False, False, True]
    assert again.attrs["usage"]["requests"] == 3
    assert server.server.stats.chat_requests == 4 + 3
    assert "50x30" in again["answer"].iloc[1] or "50 x 30" in again["answer"].iloc[1]
    read = {Path(p).name for p, _ in opens.seen}
    assert read == {Path(p).name for p in paths[:3]}  # the unchanged one was not opened
    # and the index now knows the new contents: a third run opens nothing
    with Opens(".bmp") as opens:
        third = _ask(frame, client, cache)
    assert third["cached"].all() and opens.count() == 0


def test_a_file_written_moments_ago_is_hashed_again_next_time(tmp_path, server, client, cache):
    """A file as new as the clock's tick could change again unseen within it ("racily
    clean"): its digest is not remembered until it has settled."""
    fresh = make_images(tmp_path / "fresh", 2)
    settled = make_images(tmp_path / "settled", 2)
    _age(settled)
    frame = pd.DataFrame({"path": fresh + settled})
    assert _ask(frame, client, cache)["error"].isna().all()
    known = cache.recall([os.path.abspath(p) for p in fresh + settled])
    assert set(known) == {os.path.abspath(p) for p in settled}
    with Opens(".png") as opens:
        assert _ask(frame, client, cache)["cached"].all()
    assert sorted(Path(p).name for p, _ in opens.seen) == sorted(Path(p).name for p in fresh)


def test_cached_rows_are_looked_up_in_bulk(tmp_path, server, client, cache):
    paths = _distinct(tmp_path / "imgs", 1200)
    _age(paths)
    frame = pd.DataFrame({"path": paths})
    assert _ask(frame, client, cache, concurrency=32).attrs["usage"]["requests"] == 1200
    statements: list[str] = []
    cache._db.set_trace_callback(statements.append)
    try:
        again = _ask(frame, client, cache)
    finally:
        cache._db.set_trace_callback(None)
    assert again["cached"].all()
    lookups = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # one query per chunk of rows (and per 500 keys), not one a row: 1,200 rows in a few
    # dozen queries at most, answers and digests together
    assert len(lookups) <= 60, len(lookups)
    assert any("FROM answers WHERE key IN" in s for s in lookups)


def test_a_cached_rerun_while_recording_appends_a_chunk_at_a_time(tmp_path, server, cache):
    paths = _distinct(tmp_path / "imgs", 300)
    _age(paths)
    frame = pd.DataFrame({"path": paths})
    plain = vk.connect("offline", base_url=server, api_key="offline")
    assert _ask(frame, plain, cache, concurrency=16)["error"].isna().all()
    store = tmp_path / "answers"
    recording = vk.connect("offline", base_url=server, api_key="offline", record=store)
    with Opens(FILENAME) as opens:
        result = _ask(frame, recording, cache)
    assert result["error"].isna().all()
    # every answer recorded, with a few appends (one per chunk of rows), not 300
    lines = (store / FILENAME).read_text().splitlines()
    assert len(lines) == 300
    assert 1 <= opens.count("a") <= 12, opens.count("a")
    assert server.server.stats.chat_requests == 300  # nothing asked again


def test_a_store_cut_short_by_a_crash_still_loads(tmp_path):
    store = tmp_path / "answers"
    store.mkdir()
    whole = {"key": "k1", "provider": "offline", "base_url": None, "model": "m", "answer": "a"}
    text = json.dumps(whole) + "\n" + json.dumps({**whole, "key": "k2"})[:30]
    (store / FILENAME).write_text(text)
    with pytest.warns(vk.ReplayWarning, match="no checksum"):  # written as older stores were
        recording = Recording(store, "record")
        assert recording.has("k1") and not recording.has("k2")


# A run asking a folder's images while recording, killed by the test part-way.
WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import pandas as pd
    import visionkit as vk

    url, cache, folder, store = sys.argv[1:]
    paths = sorted(str(p) for p in Path(folder).glob("*.png"))
    client = vk.connect("offline", base_url=url, api_key="offline", record=store)
    pd.DataFrame({"path": paths}).vision.ask(
        "Describe.", client=client, cache=cache, concurrency=4, progress=False
    )
    """
)


def test_a_killed_run_loses_no_answer_it_received(tmp_path):
    """Killed with SIGKILL mid-run: every answer it recorded is in the cache (committed first),
    the store loads, and the next run pays only for what the first never received."""
    folder = tmp_path / "imgs"
    paths = _distinct(folder, 60)
    _age(paths)
    cache_path, store = tmp_path / "answers.sqlite", tmp_path / "answers"
    Cache(cache_path).close()
    with offline.serve(latency=0.05) as url:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(cache_path), str(folder), str(store)], env=env
        )
        deadline = time.monotonic() + 120
        while url.server.stats.chat_requests < 20:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        sent_before = url.server.stats.chat_requests
        with Cache(cache_path) as cache:
            cached = cache.get_many(_keys(store))
            stored = len(cache)
            recorded = _keys(store)
            assert set(recorded) <= set(cached)  # nothing recorded that is not committed
            assert stored >= sent_before - 4 - 1  # at most the requests in flight were lost
            client = vk.connect("offline", base_url=url, api_key="offline")
            rest = pd.DataFrame({"path": paths}).vision.ask(
                "Describe.", client=client, cache=cache, progress=False
            )
        assert rest["error"].isna().all()
        assert rest.attrs["usage"]["requests"] == 60 - stored
        # paid twice: only what was in flight when the first run died
        assert len(url.server.stats.paid_twice) <= 4


def _keys(store: Path) -> list[str]:
    recording = Recording(store, "record")
    records = recording._load()
    return list(records)


def test_a_plan_reads_an_image_column_a_block_at_a_time_and_gives_every_cell():
    """The planner's view of an image column (Arrow-backed strings, or objects of any kind)
    gives each row's cell by position, in any order and from several threads, while holding
    Python objects for a few blocks of rows only (not ~100 bytes for every row)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from visionkit.query.plan import ColumnCells

    n = 3 * ColumnCells.BLOCK * ColumnCells.KEPT + 17
    paths = pd.Series([f"/data/images/{i:07d}.png" for i in range(n)], dtype="str")
    mixed = pd.Series([b"\x89PNG" if i % 3 else None for i in range(n)], dtype=object)
    order = np.random.default_rng(0).permutation(n).tolist()
    for column in (paths, mixed):
        want = column.tolist()
        cells = ColumnCells(column.array)
        assert len(cells) == n
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(cells.__getitem__, order, chunksize=64))
        assert got == [want[i] for i in order]
        assert len(cells._blocks) <= ColumnCells.KEPT
