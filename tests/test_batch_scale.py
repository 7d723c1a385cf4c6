"""Batch jobs at scale (issue 19): results collected in chunks with nothing paid lost, a
manifest that stays small, conservative limits for unknown servers, and a wait that resubmits
what a round left unanswered -- against the hostile Batch API (tests/hostile_batch.py) and the
offline stand-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openai
import pandas as pd
import pytest
from hostile_batch import MODEL, hostile_batch
from image_factory import photo, save

import visionkit as vk
from visionkit.batch import collect
from visionkit.query.cache import Cache

PROMPT = "Describe this image."


@pytest.fixture
def images(tmp_path) -> pd.DataFrame:
    paths = [save(photo(64 + 8 * i, 48, seed=i), tmp_path / f"p{i}.jpg") for i in range(10)]
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=[f"r{i}" for i in range(10)])


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache" / "answers.sqlite"


def submit(df, server, cache, prompt=PROMPT, **kw):
    client = vk.connect(base_url=server.base_url, api_key="test-key", model=MODEL)
    kw.setdefault("upload_interval", 0)
    kw.setdefault("progress", False)
    return df.vision.submit(prompt, client=client, cache=cache, **kw)


def test_a_download_cut_mid_file_keeps_the_chunks_committed_and_the_next_poll_finishes(
    images, cache, monkeypatch
):
    """Answers are committed chunk by chunk before the batch is marked collected: a download
    cut half-way keeps what arrived, leaves the batch to collect again, and a wait goes on."""
    monkeypatch.setattr(collect, "CHUNK", 2)
    with hostile_batch(fault="content_cut") as server:
        job = submit(images, server, cache)
        with pytest.raises(openai.APIConnectionError, match="broke off"):
            job.refresh()  # outside a wait, the cut is raised (as the SDK's error)
        keys = [r.key for r in job.manifest.rows(job.id)]
        kept = Cache(cache).get_many(keys)
        assert 2 <= len(kept) < len(keys)  # the chunks read before the cut
        assert job.batches.state.tolist() == ["created"]  # not marked collected
        server.fault, server.times = "content_cut", 1
        job.wait(timeout=60, progress=False)  # the cut again, then a whole download
        assert server.calls["files.content"] == 3
        assert job.status == "completed" and job.result().error.isna().all()
        assert server.billed_twice == {} and server.billed_lines == len(images)


# -- (b) the manifest: what a row needs, once ------------------------------------------------


def _hex(i: int, salt: str = "") -> str:
    import hashlib

    return hashlib.sha256(f"{salt}{i}".encode()).hexdigest()


def test_the_manifest_holds_a_row_in_at_most_150_bytes(tmp_path):
    """The prompt once per job, keys and digests as bytes, one table a row: <= 150 bytes a row
    (it was 537: hex keys twice with two indexes each, and every row's prompt)."""
    import sqlite3

    from visionkit.batch.manifest import JobRow, Manifest

    n = 20_000
    path = tmp_path / "answers.batches.sqlite"
    manifest = Manifest(path)
    prompt = "Describe this image in one sentence, naming the main object and its colour."
    manifest.save_job("job-1", provider="offline", model="m", prompt=prompt)
    for start in range(0, n, 1000):
        rows = [
            JobRow(i, i, _hex(i), "send", None, 2890, prompt=prompt, images=[_hex(i, "img")], seq=1)
            for i in range(start, start + 1000)
        ]
        manifest.add_rows("job-1", rows)
    manifest.add_shard("s1", "job-1", 1, tmp_path / "f.jsonl", n, 10**6)
    manifest.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert path.stat().st_size / n <= 150
    manifest = Manifest(path)
    assert manifest.requests([_hex(7)]) == {_hex(7): (prompt, None, [_hex(7, "img")])}
    assert manifest.covered(_hex(7)) and not manifest.covered(_hex(n + 1))
    assert len(manifest.shard_tokens("s1")) == n


def test_a_row_sent_again_counts_every_batch_that_held_it(tmp_path):
    from visionkit import offline

    paths = [save(photo(64 + 8 * i, 48, seed=i), tmp_path / f"p{i}.jpg") for i in range(6)]
    df = pd.DataFrame({"path": [str(p) for p in paths]})
    cache = tmp_path / "answers.sqlite"
    with offline.OfflineServer(upload_interval=0) as server:
        client = vk.connect("offline", base_url=server.base_url)
        server.inject_batch(expire_fraction=0.5)
        kw = dict(client=client, cache=cache, upload_interval=0, progress=False)
        first = df.vision.submit(PROMPT, **kw).wait(progress=False, resubmit=False).result()
        again = df.vision.submit(PROMPT, **kw).wait(progress=False).result()
    resent = first.error.notna()
    assert resent.sum() == 3
    assert again.error.isna().all()
    assert again.attempts[resent].eq(2).all() and again.attempts[~resent].eq(1).all()
    assert (again.batch_id[resent] != first.batch_id[resent]).all()
    assert again.batch_id[~resent].equals(first.batch_id[~resent])


def test_a_manifest_of_the_first_layout_is_converted_when_opened(tmp_path):
    """A manifest written before this layout (job_rows, shard_keys, hex keys) keeps its jobs:
    rows, what each asks, which batches held them, and which keys are still in a live file."""
    import sqlite3

    from visionkit.batch.manifest import Manifest

    path = tmp_path / "answers.batches.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE jobs (job_id TEXT PRIMARY KEY, created REAL NOT NULL, provider TEXT,
            base_url TEXT, batch_base_url TEXT, model TEXT, prompt TEXT, schema TEXT,
            cache_path TEXT, metadata TEXT, system TEXT, identity TEXT);
        CREATE TABLE job_rows (job_id TEXT NOT NULL, pos INTEGER NOT NULL, label TEXT,
            key TEXT, status TEXT, error TEXT, estimated_tokens INTEGER, attempts INTEGER,
            batch_id TEXT, prompt TEXT, images TEXT, PRIMARY KEY (job_id, pos));
        CREATE INDEX job_rows_key ON job_rows (key);
        CREATE TABLE shards (shard_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER,
            path TEXT, lines INTEGER, bytes INTEGER, state TEXT NOT NULL, created REAL,
            file_id TEXT, batch_id TEXT, status TEXT, completed INTEGER DEFAULT 0,
            failed INTEGER DEFAULT 0, total INTEGER DEFAULT 0, output_file_id TEXT,
            error_file_id TEXT);
        CREATE TABLE shard_keys (shard_id TEXT NOT NULL, key TEXT NOT NULL,
            estimated_tokens INTEGER);
        CREATE TABLE line_errors (key TEXT PRIMARY KEY, batch_id TEXT, error TEXT);
        CREATE TABLE uploads (batch_base_url TEXT PRIMARY KEY, last REAL);
        INSERT INTO jobs (job_id, created, provider, model, prompt, system)
            VALUES ('job-a', 1.0, 'offline', 'm', 'Describe.', 'Be brief.');
        INSERT INTO shards (shard_id, job_id, seq, path, lines, state, batch_id, status)
            VALUES ('s1', 'job-a', 1, 'f1', 2, 'collected', 'batch_1', 'expired'),
                   ('s2', 'job-a', 2, 'f2', 1, 'created', 'batch_2', 'in_progress');
        """
    )
    k0, k1, k2 = _hex(0), _hex(1), _hex(2)
    rows = [
        ("job-a", 0, '"r0"', k0, "send", None, 10, None, None, "Describe.", f'["{_hex(0, "i")}"]'),
        ("job-a", 1, '"r1"', k1, "send", None, 11, None, None, "Describe.", f'["{_hex(1, "i")}"]'),
        ("job-a", 2, '"r2"', k1, "repeat", None, 11, None, None, "Describe.", None),
        ("job-a", 3, '"r3"', k2, "error", "ImageError: bad", None, None, None, "Other.", None),
    ]
    db.executemany("INSERT INTO job_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    keys = [("s1", k0, 10), ("s1", k1, 11), ("s2", k1, 11)]
    db.executemany("INSERT INTO shard_keys VALUES (?, ?, ?)", keys)
    db.commit()
    db.close()
    manifest = Manifest(path)
    found = manifest.rows("job-a")
    assert [(r.pos, r.label, r.key, r.status) for r in found] == [
        (0, "r0", k0, "send"),
        (1, "r1", k1, "send"),
        (2, "r2", k1, "repeat"),
        (3, "r3", k2, "error"),
    ]
    assert manifest.submissions("job-a") == {k0: (1, "batch_1"), k1: (2, "batch_2")}
    assert manifest.covered(k1) and not manifest.covered(k0)
    assert manifest.shard_tokens("s2") == {k1: 11}
    asked = manifest.requests([k0, k2])
    assert asked[k0] == ("Describe.", "Be brief.", [_hex(0, "i")])
    assert asked[k2] == ("Other.", "Be brief.", [])
    tables = {r[0] for r in manifest._run("SELECT name FROM sqlite_master")}
    assert "job_rows" not in tables and "shard_keys" not in tables


# -- (c) limits nobody told us ---------------------------------------------------------------


def test_a_server_with_no_known_limits_gets_openais_conservative_ones_unless_told(images):
    with hostile_batch() as server:
        client = vk.connect(base_url=server.base_url, api_key="k", model=MODEL)
        plan = images.vision.submit(PROMPT, client=client, dry_run=True, progress=False)
        told = images.vision.submit(
            PROMPT, client=client, dry_run=True, progress=False, max_requests_per_file=100_000
        )
    usage = plan.attrs["usage"]
    assert (usage["max_requests_per_file"], usage["max_file_bytes"]) == (50_000, 200_000_000)
    assert told.attrs["usage"]["max_requests_per_file"] == 100_000  # told otherwise


def test_a_batch_refused_for_its_size_is_split_and_its_rows_sent_again(images, cache):
    with hostile_batch(max_lines=4) as server:  # takes at most 4 lines; nobody said so
        job = submit(images, server, cache, max_requests_per_file=10)
        assert len(job.batches) == 1  # 10 lines: refused for its size
        job.wait(timeout=60, progress=False)
        result = job.result()
        assert result.error.isna().all()
        assert server.billed_twice == {} and server.billed_lines == len(images)
        assert all(b.total <= 4 for b in server.batches.values() if b.final != "failed")
    assert job.limits().max_requests_per_file <= 4  # later files of the job are cut smaller
    files = job.batches
    assert files.lines.iloc[0] == 10 and set(files.status) == {"failed", "completed"}
    assert files[files.status == "completed"].lines.max() <= 4


# -- (d) unattended to the end -----------------------------------------------------------------


@pytest.fixture
def many(tmp_path) -> pd.DataFrame:
    from test_ask import make_images

    return pd.DataFrame({"path": make_images(tmp_path / "many", 200)})


def test_one_submit_and_one_wait_answer_every_row_though_a_fifth_of_every_batch_expires(
    many, cache
):
    with hostile_batch(expire_fraction=0.2) as server:
        job = submit(many, server, cache, max_requests_per_file=100)
        job.wait(timeout=120, progress=False)
        result = job.result()
        assert result.error.isna().all() and result.answer.notna().all()  # 200 answered
        assert server.billed_lines == 200 and server.billed_twice == {}  # 200 lines billed
        assert len(server.batches) > 2  # rounds of the rows still missing
    assert job.status == "completed"
    assert result.attempts.max() > 1 and result.attempts.min() == 1


def test_resubmitting_is_switched_off_by_resubmit_false(many, cache):
    with hostile_batch(expire_fraction=0.2) as server:
        job = submit(many, server, cache)
        job.wait(timeout=60, progress=False, resubmit=False)
        assert len(server.batches) == 1 and server.billed_lines == 160
    assert job.status == "incomplete"
    assert job.result().error.str.startswith("batch_expired").sum() == 40


def test_rows_failed_for_a_passing_reason_are_sent_again(many, cache):
    with hostile_batch(fail_every=5) as server:  # every 5th line of a batch answers 500
        job = submit(many, server, cache)
        job.wait(timeout=60, progress=False)
        assert job.result().error.isna().all()
        assert server.billed_lines == 200 and server.billed_twice == {}


def test_a_round_that_answers_nothing_ends_the_rounds(images, cache):
    with hostile_batch(expire_fraction=1.0) as server:  # every line of every batch expires
        job = submit(images, server, cache)
        job.wait(timeout=60, progress=False)
        assert len(server.batches) == 2  # the first and one round, which answered none
    assert job.status == "incomplete"
    assert job.result().error.str.startswith("batch_expired").all()


def test_rows_of_a_batch_the_user_cancelled_are_not_sent_again(tmp_path, cache):
    from test_ask import make_images

    from visionkit import offline

    df = pd.DataFrame({"path": make_images(tmp_path / "imgs", 20)})
    with offline.OfflineServer(upload_interval=0, batch_time=4) as server:
        client = vk.connect("offline", base_url=server.base_url)
        job = df.vision.submit(PROMPT, client=client, cache=cache, progress=False)
        job.cancel()
        job.wait(timeout=60, progress=False)
        assert server.stats.batches_created == 1
    assert job.status == "incomplete"
    assert job.result().error.str.startswith("batch_cancelled").any()


def test_submitting_again_takes_over_the_rows_a_wait_would_send_again(images, cache):
    """resubmit=False leaves rows to send again (and their input file); a second submit sends
    them and clears the mark, so no later wait sends them a second time, and no file lingers."""
    with hostile_batch(expire_fraction=0.5) as server:
        job = submit(images, server, cache)
        job.wait(timeout=60, progress=False, resubmit=False)
        kept = Path(job.manifest.shards(job.id)[0]["path"])
        assert kept.exists()  # kept for a wait to send its rows again
        server.expire_fraction = 0.0
        again = submit(images, server, cache)
        assert not kept.exists()
        again.wait(timeout=60, progress=False)
        job.wait(timeout=60, progress=False)  # the first handle's wait sends nothing more
        assert again.result().error.isna().all()
        assert server.billed_lines == len(images) and server.billed_twice == {}
        assert len(server.batches) == 2


def test_a_large_frame_is_hashed_a_block_at_a_time_to_the_same_job_id():
    """The job id's row hashes of a frame larger than one block (and of its pieces, as a
    Dask frame's partitions give them) are pandas' hashes of the whole frame's cells."""
    from visionkit.batch.shared import _HASH_BLOCK, _cell_identity, cell_hashes

    n = 2 * _HASH_BLOCK + 123
    frame = pd.DataFrame(
        {
            "path": [f"/images/{i:07d}.png" for i in range(n)],
            "image": [bytes([i % 251]) * 5 if i % 7 else None for i in range(n)],
        },
        index=pd.Index([f"row-{i}" for i in range(n)]),
    )
    for columns in (["path"], ["path", "image"]):
        whole = pd.DataFrame(
            {c: [_cell_identity(x) for x in frame[c]] for c in columns}, index=frame.index
        )
        want = pd.util.hash_pandas_object(whole, index=True).to_numpy()
        got = cell_hashes(frame, columns)
        assert got.dtype == want.dtype and (got == want).all()
        pieces = [cell_hashes(frame.iloc[a : a + 5000], columns) for a in range(0, n, 5000)]
        assert (np.concatenate(pieces) == want).all()
