"""The SQLite answer cache: keys, durability, locations, several processes on one file."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from visionkit.query.cache import Cache, CachedAnswer, default_cache_path, image_digest, request_key

BASE = dict(
    provider="inference.net",
    base_url="https://api.inference.net/v1",
    model="m",
    prompt="Describe",
    system=None,
    schema=None,
    params={"temperature": 0},
    images=[image_digest(b"png-bytes")],
)


def test_key_changes_with_everything_that_decides_the_answer():
    base = request_key(**BASE)
    assert base == request_key(**dict(BASE))
    assert len(base) == 64
    for name, value in [
        ("provider", "openai"),
        ("base_url", "http://127.0.0.1:9/v1"),
        ("model", "other"),
        ("prompt", "Describe!"),
        ("system", "Be brief."),
        ("schema", {"type": "object"}),
        ("params", {"temperature": 1}),
        ("images", [image_digest(b"other-bytes")]),
    ]:
        assert request_key(**{**BASE, name: value}) != base, name


def test_key_ignores_trailing_slash_and_param_order():
    a = request_key(**{**BASE, "params": {"a": 1, "b": 2}})
    b = request_key(**{**BASE, "params": {"b": 2, "a": 1}, "base_url": BASE["base_url"] + "/"})
    assert a == b


def test_put_get_roundtrip_persists_across_handles(tmp_path):
    path = tmp_path / "c.sqlite"
    with Cache(path) as cache:
        assert cache.get("k") is None
        cache.put("k", CachedAnswer("a red square", 1610, 7, 1605, "m", "offline"))
        assert "k" in cache
    with Cache(path) as again:  # a fresh connection sees it: it was committed at once
        got = again.get("k")
        assert got == CachedAnswer("a red square", 1610, 7, 1605, "m", "offline")
        assert len(again) == 1
        assert again.get_many(["k", "missing"]) == {"k": got}
        mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode.lower() == "wal"


def test_open_accepts_true_false_paths_and_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "vk"))
    assert default_cache_path() == tmp_path / "vk" / "answers.sqlite"
    cache = Cache.open(True)
    assert cache.path == tmp_path / "vk" / "answers.sqlite" and cache.path.exists()
    assert Cache.open(False) is None and Cache.open(None) is None
    assert Cache.open(cache) is cache
    assert Cache.open(tmp_path).path == tmp_path / "answers.sqlite"
    assert Cache.open(str(tmp_path / "x.db")).path == tmp_path / "x.db"


def test_default_location_follows_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("VISIONKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "visionkit" / "answers.sqlite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_path() == tmp_path / "home" / ".cache" / "visionkit" / "answers.sqlite"


def _writer(path: str, worker: int, count: int, barrier) -> None:
    cache = Cache(path)
    barrier.wait()
    for i in range(count):
        cache.put(f"{worker}-{i}", CachedAnswer(f"answer {worker} {i}", i, 1))
        # read what another process wrote meanwhile: readers never block writers in WAL
        cache.get(f"{(worker + 1) % 4}-{i}")
    cache.close()


def test_several_processes_share_one_file(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    Cache(path).close()
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer, args=(path, w, 60, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with Cache(path) as cache:
        assert len(cache) == 240
        assert cache.get("3-59").answer == "answer 3 59"


def test_cache_file_holds_no_secret_when_given_one(tmp_path):
    # The cache API has no place for a key at all; the key recipe takes none.
    with pytest.raises(TypeError):
        request_key(**BASE, api_key="sk-x")  # type: ignore[call-arg]
    path = tmp_path / "c.sqlite"
    with Cache(path) as cache:
        cache.put(request_key(**BASE), CachedAnswer("x"))
    con = sqlite3.connect(path)
    cols = [r[1] for r in con.execute("PRAGMA table_info(answers)")]
    con.close()
    assert not any("key" in c and c != "key" for c in cols)
