"""The SQLite answer cache: keys, durability, locations, several processes on one file."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from visionkit.query.cache import (
    Cache,
    CachedAnswer,
    CacheError,
    CacheWarning,
    default_cache_path,
    image_digest,
    request_key,
)

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


# -- integrity ------------------------------------------------------------------------------


def _flip_byte_in(path, needle: bytes) -> None:
    """Change one byte of ``needle`` where it is stored in the database file itself."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0, "the answer is not in the main file (still in the WAL?)"
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_a_miss_with_one_warning(tmp_path):
    path = tmp_path / "c.sqlite"
    with Cache(path) as cache:
        cache.put("k1", CachedAnswer("a red square on grey", 1610, 7, 1605, "m", "offline"))
        cache.put("k2", CachedAnswer("a blue circle on white", 1610, 7, 1605, "m", "offline"))
        cache.put("k3", CachedAnswer("a green line on black", 1610, 7, 1605, "m", "offline"))
    _flip_byte_in(path, b"a red square")  # closing checkpointed the WAL into the file
    _flip_byte_in(path, b"a blue circle")
    with Cache(path) as cache:
        with pytest.warns(CacheWarning, match="failed its checksum") as caught:
            assert cache.get("k1") is None
            assert cache.get("k2") is None
            assert cache.get_many(["k1", "k2", "k3"]).keys() == {"k3"}
        assert len(caught) == 1 and cache.corrupt == 4
        assert cache.get("k3").answer == "a green line on black"
        # the fresh answer replaces the damaged one
        cache.put("k1", CachedAnswer("a red square on grey", 1610, 7, 1605, "m", "offline"))
        assert cache.get("k1").answer == "a red square on grey"


def test_a_cache_from_before_checksums_keeps_its_answers(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE answers (key TEXT PRIMARY KEY, answer TEXT, prompt_tokens INTEGER, "
        "completion_tokens INTEGER, estimated_tokens INTEGER, model TEXT, provider TEXT, "
        "created REAL NOT NULL)"
    )
    con.execute("INSERT INTO answers VALUES ('k', 'old answer', 1, 2, 3, 'm', 'p', 0)")
    con.commit()
    con.close()
    with Cache(path) as cache:
        assert cache.get("k") == CachedAnswer("old answer", 1, 2, 3, "m", "p")
        cache.put("k2", CachedAnswer("new"))
        assert cache.get("k2").answer == "new"


def test_latency_is_kept_and_a_cache_from_before_latencies_still_verifies(tmp_path):
    path = tmp_path / "before.sqlite"
    old = CachedAnswer("an answer from before latencies", 1610, 7, 1605, "m", "offline")
    values = (
        "k",
        *[
            getattr(old, f)
            for f in (
                "answer",
                "prompt_tokens",
                "completion_tokens",
                "estimated_tokens",
                "model",
                "provider",
            )
        ],
    )
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE answers (key TEXT PRIMARY KEY, answer TEXT, prompt_tokens INTEGER, "
        "completion_tokens INTEGER, estimated_tokens INTEGER, model TEXT, provider TEXT, "
        "created REAL NOT NULL, checksum TEXT)"
    )
    con.execute(
        "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)", (*values, old.checksum("k"))
    )
    con.commit()
    con.close()
    timed = CachedAnswer("a red square", 1610, 7, 1605, "m", "offline", latency_s=0.8125)
    with Cache(path) as cache:
        assert cache.get("k") == old and cache.corrupt == 0  # its checksum still holds
        cache.put("k2", timed)
    with Cache(path) as again:
        assert again.get("k2") == timed and again.get("k2").latency_s == 0.8125
        assert again.get_many(["k", "k2"]) == {"k": old, "k2": timed}
    _flip_byte_in(path, b"a red square")  # an entry with a latency is checked as any other
    with Cache(path) as damaged, pytest.warns(CacheWarning):
        assert damaged.get("k2") is None


def test_a_file_that_is_not_sqlite_is_one_clear_error(tmp_path):
    path = tmp_path / "answers.sqlite"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(CacheError, match=r"answers\.sqlite.*not a SQLite database") as info:
        Cache(path)
    assert info.value.path == path
    assert path.read_bytes().startswith(b"these are my notes")  # left as it was


def _damage_pages(path, first_page: int, pages: int = 3) -> None:
    page = 4096
    data = bytearray(path.read_bytes())
    assert len(data) > (first_page + pages) * page
    data[first_page * page : (first_page + pages) * page] = b"\xa5" * (pages * page)
    path.write_bytes(bytes(data))


def test_a_damaged_file_is_one_clear_error(tmp_path):
    path = tmp_path / "c.sqlite"
    with Cache(path) as cache:
        for i in range(400):
            cache.put(f"k{i:04d}", CachedAnswer("x" * 200 + str(i), i))
    _damage_pages(path, 2)
    with pytest.raises(CacheError, match=r"c\.sqlite.*damaged"), Cache(path) as cache:
        cache.get_many(f"k{i:04d}" for i in range(400))


# -- claims ---------------------------------------------------------------------------------


def test_claims_let_one_owner_ask_and_the_others_wait(tmp_path):
    path = tmp_path / "c.sqlite"
    with Cache(path, lease=30) as a, Cache(path, lease=30) as b:
        assert a.claim("k", "A") is True
        assert a.claim("k", "A") is True  # re-entrant for the same owner
        assert b.claim("k", "B") is False
        assert b.peek("k", "B") is False
        a.put("k", CachedAnswer("the answer"))  # storing ends the claim
        assert b.peek("k", "B") == CachedAnswer("the answer")
        assert b.claim("k", "B") == CachedAnswer("the answer")
        # a failed request gives the key up: the next owner may ask it
        assert a.claim("j", "A") is True
        a.release("j", "A")
        assert b.peek("j", "B") is True and a.claim("j", "A") is False


def test_a_dead_owners_claim_expires_unless_renewed(tmp_path, monkeypatch):
    import visionkit.query.cache as cache_module

    now = [1000.0]
    monkeypatch.setattr(cache_module.time, "time", lambda: now[0])
    path = tmp_path / "c.sqlite"
    with Cache(path, lease=10) as a, Cache(path, lease=10) as b:
        assert a.claim("k", "A") is True and a.claim("j", "A") is True
        now[0] += 8
        assert a.renew("A") == 2  # alive: both leases start again
        now[0] += 8
        assert b.claim("k", "B") is False
        now[0] += 3  # A stopped renewing (it died): its lease ran out
        assert b.peek("k", "B") is True
        assert a.claim("k", "A") is False  # B owns it now
        a.release(None, "A")
        assert b.claim("j", "B") is True


def test_a_failed_commit_is_rolled_back_so_later_answers_still_reach_the_file(tmp_path):
    """COMMIT can fail (a disk I/O error, a full disk): the connection must not be
    left inside that transaction, or every later put fails with 'cannot start a transaction'."""

    class FailingCommit:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db, self.fail = db, True

        def execute(self, sql: str, *args):
            if sql == "COMMIT" and self.fail:
                self.fail = False
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def __getattr__(self, name: str):
            return getattr(self.db, name)

    with Cache(tmp_path / "answers.sqlite") as cache:
        cache._db = FailingCommit(cache._db)
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            cache.put("k1", CachedAnswer("lost", 1, 1, 1, "m", "offline"))
        cache.put("k2", CachedAnswer("kept", 1, 1, 1, "m", "offline"))
    with Cache(tmp_path / "answers.sqlite") as cache:
        assert cache.get("k2").answer == "kept" and cache.get("k1") is None


AWKWARD = 'tab\t new\nline \\ "q" \u2028 😀 \x00\x7f é'


def test_keys_made_from_a_template_are_request_keys():
    """Plan.key writes the fixed parts of a key's JSON once (KeyMaker): the keys must be
    exactly request_key's, or every answer cached before would be missed."""
    import itertools

    from visionkit.query.cache import KeyMaker, request_key

    choices = {
        "provider": ["offline", "inference.net"],
        "base_url": [None, "https://api.example.com/v1/"],
        "model": ["m", "modèle"],
        "system": [None, 'be "brief"'],
        "schema": [None, {"type": "object", "properties": {"n": {"type": "integer"}}}],
        "params": [{}, {"temperature": 0.0, "_encode": {"max_side": 512}, "stop": ["\n"]}],
    }
    for values in itertools.product(*choices.values()):
        fixed = dict(zip(choices, values, strict=True))
        make = KeyMaker(**fixed)
        for prompt in ["Describe.", 'Is this a "cat"? {braces} ünïcode', "", AWKWARD]:
            for images in [[], ["a" * 64], ["b" * 64, "c" * 64], [AWKWARD, "d" * 64]]:
                assert make(prompt, images) == request_key(prompt=prompt, images=images, **fixed)


def test_an_answers_values_are_its_fields_in_order():
    """``values()`` (what is stored and checksummed) stays in step with the dataclass."""
    import dataclasses

    entry = CachedAnswer("a", 1, 2, 3, "m", "p")
    assert entry.values() == dataclasses.astuple(entry)
