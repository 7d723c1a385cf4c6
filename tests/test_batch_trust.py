"""Batch jobs against a hostile Batch API (tests/hostile_batch.py, one fault per mode) and real
second processes: nothing is paid twice, whatever the server sends is checked before it is
used, and every wait keeps its deadline (issue 18, items 1, 2, 5-9 and 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hostile_batch import MODEL, hostile_batch
from image_factory import photo, save

import visionkit as vk
from visionkit import offline
from visionkit.batch.manifest import Manifest, manifest_path
from visionkit.query.cache import Cache

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Describe this image."


@pytest.fixture
def images(tmp_path) -> pd.DataFrame:
    paths = [save(photo(64 + 8 * i, 48, seed=i), tmp_path / f"p{i}.jpg") for i in range(6)]
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=[f"r{i}" for i in range(6)])


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache" / "answers.sqlite"


def submit(df, server, cache, prompt=PROMPT, **kw):
    client = vk.connect(base_url=server.base_url, api_key="test-key", model=MODEL)
    kw.setdefault("upload_interval", 0)
    kw.setdefault("progress", False)
    return df.vision.submit(prompt, client=client, cache=cache, **kw)


def answered_once(server, df) -> None:
    """Every row billed exactly once, and nothing else billed."""
    assert server.billed_twice == {}
    assert server.billed_lines == len(df)


# -- 1: two processes, one job -----------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import pandas as pd
    import visionkit as vk

    url, cache, folder, go, out = sys.argv[1:]
    paths = sorted(str(p) for p in Path(folder).glob("*.png"))
    df = pd.DataFrame({"path": paths})
    client = vk.connect("offline", base_url=url, api_key="offline")
    while not Path(go).exists():
        time.sleep(0.005)
    job = df.vision.submit("Describe.", client=client, cache=cache, progress=False,
                           upload_interval=0, max_requests_per_file=8)
    job.wait(timeout=120, progress=False)
    result = job.result()
    Path(out).write_text(json.dumps({
        "job": job.id,
        "answers": result["answer"].tolist(),
        "errors": result["error"].dropna().tolist(),
    }))
    """
)


def test_two_processes_submitting_one_job_at_once_pay_for_each_row_once(tmp_path):
    from test_ask import make_images

    folder = tmp_path / "imgs"
    make_images(folder, 24)
    cache = tmp_path / "shared" / "answers.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with offline.serve(upload_interval=0, batch_time=0.5) as url:
        procs = []
        for name in ("a", "b", "c"):
            args = [url, str(cache), str(folder), str(tmp_path / "go"), str(tmp_path / name)]
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, *args], env=env))
        time.sleep(1.5)  # let them import and connect, then start them together
        (tmp_path / "go").touch()
        for proc in procs:
            assert proc.wait(timeout=180) == 0
        stats = url.server.stats
        outs = [json.loads((tmp_path / name).read_text()) for name in ("a", "b", "c")]
        assert stats.paid_twice == {}
        assert stats.batch_lines_answered == 24  # each row paid once, by one process
        assert stats.batches_created == 3 and stats.uploads == 3  # 8 lines a file
    assert len({o["job"] for o in outs}) == 1
    for out in outs:  # every process sees every answer (the waiters attached to the batches)
        assert out["errors"] == [] and all(a.startswith(offline.PREFIX) for a in out["answers"])


# -- 2: calls that make something are never retried blindly ------------------------------------


@pytest.mark.parametrize("fault", ["create_500", "create_drop"])
def test_a_batch_created_whose_answer_was_lost_is_adopted_never_created_twice(images, cache, fault):
    with hostile_batch(fault=fault) as server:
        job = submit(images, server, cache).wait(timeout=60, progress=False)
        assert server.calls["batches.create"] == 1
        assert len(server.batches) == 1 and job.batches.batch_id.tolist() == list(server.batches)
        answered_once(server, images)
        assert job.result().error.isna().all()


@pytest.mark.parametrize("fault", ["upload_drop", "upload_500"])
def test_an_upload_whose_answer_was_lost_is_found_never_sent_twice(images, cache, fault):
    with hostile_batch(fault=fault) as server:
        job = submit(images, server, cache).wait(timeout=60, progress=False)
        assert server.calls["files.create"] == 1 and server.uploads == 1
        (file_id,) = [f for f, o in server.files.items() if o["purpose"] == "batch"]
        assert job.batches.file_id.tolist() == [file_id]
        answered_once(server, images)
        assert job.result().error.isna().all()


def test_a_cancel_answered_500_after_cancelling_is_not_sent_again(images, cache):
    with hostile_batch(fault="cancel_500", polls=10_000) as server:
        job = submit(images, server, cache)
        job.cancel()
        assert server.calls["batches.cancel"] == 1
        (batch,) = server.batches.values()
        assert batch.status in ("cancelling", "cancelled")


# -- 5: only the ids this batch was sent -------------------------------------------------------


def test_result_lines_for_ids_never_sent_are_never_cached_and_the_first_answer_wins(images, cache):
    with hostile_batch(polls=10_000) as server:
        other = submit(images.iloc[:1], server, cache, prompt="Another prompt.")
        foreign = other.manifest.rows(other.id)[0].key  # the cache key of another prompt
        server.fault, server.foreign_id, server.polls = "foreign_ids", foreign, 0
        job = submit(images, server, cache)
        with pytest.warns(vk.BatchWarning, match="2 for ids this batch was never sent"):
            job.wait(timeout=60, progress=False)
        result = job.result()
    store = Cache(cache)
    assert store.get(foreign) is None and store.get("not-a-key-of-this-job") is None
    assert result.error.isna().all()
    assert result.answer.str.startswith("answer for ").all()  # not "DUPLICATE"
    usage = result.attrs["usage"]
    assert (usage["foreign_lines"], usage["duplicate_lines"]) == (2, 1)
    keys = [r.key for r in job.manifest.rows(job.id)]
    assert sorted(store.get_many(keys)) == sorted(keys)


# -- 6: every line checked; one bad line is one row's error ------------------------------------


def test_result_lines_of_the_wrong_types_are_those_rows_errors_and_the_rest_collected(
    images, cache
):
    with hostile_batch(fault="bad_types") as server:
        job = submit(images, server, cache)
        with pytest.warns(vk.BatchWarning, match="could not be read"):
            job.wait(timeout=60, progress=False)
        job.wait(timeout=60, progress=False)  # and again: nothing raises on a later poll
        result = job.result()
    assert job.status == "incomplete"
    errors = result.error.dropna()
    broken = errors[errors.str.startswith("the result line does not fit")]
    assert len(broken) == 3
    assert any("status_code" in e for e in broken) and any("usage" in e for e in broken)
    assert any("content" in e for e in broken)
    assert result.answer.notna().sum() == 2  # the sound lines
    assert result.attrs["usage"]["unreadable_lines"] == 1  # "custom_id": 7
    keys = [r.key for r in job.manifest.rows(job.id)]
    assert len(Cache(cache).get_many(keys)) == 2  # only the sound answers were cached


# -- 7: only documented statuses are waited on -------------------------------------------------


def test_an_unknown_batch_status_ends_the_wait_naming_it(images, cache):
    with hostile_batch(fault="status_exploded") as server:
        job = submit(images, server, cache)
        with pytest.warns(vk.BatchWarning, match="'exploded'"):
            job.wait(timeout=20, progress=False)
        assert server.calls["batches.retrieve"] == 1  # ended at the first poll
        assert job.status == "unknown" and job.batches.status.tolist() == ["exploded"]
        with pytest.warns(vk.BatchWarning, match="pending"):
            usage = job.result().attrs["usage"]
        assert usage["pending"] == len(images) and usage["failed"] == 0


def test_a_batch_naming_a_file_id_that_is_not_an_id_ends_the_wait_and_is_never_fetched(
    images, cache
):
    with hostile_batch(fault="bad_file_id") as server:
        job = submit(images, server, cache)
        with pytest.warns(vk.BatchWarning, match="not an id"):
            job.wait(timeout=20, progress=False)
        assert server.calls["files.content"] == 0 and server.calls["files.list"] == 0
        assert job.status == "unknown"


# -- 8: a wait keeps its deadline --------------------------------------------------------------


@pytest.mark.parametrize("fault", ["poll_hang", "content_hang"])
def test_wait_returns_by_its_timeout_when_a_call_inside_it_hangs(images, cache, fault):
    with hostile_batch(fault=fault, hang=30) as server:
        job = submit(images, server, cache)
        start = time.monotonic()
        job.wait(timeout=3, progress=False)
        took = time.monotonic() - start
        assert took < 15  # the server hangs 30 s; the wait's own deadline was 3 s
        assert job.status == "in_progress"


# -- 9: a damaged manifest ---------------------------------------------------------------------


def test_a_manifest_that_is_not_a_database_is_one_error_naming_it(images, cache):
    path = manifest_path(cache)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(vk.CacheError, match="batch manifest") as caught:
        vk.batch_jobs(cache)
    assert str(path) in str(caught.value) and "Move it away" in str(caught.value)
    with pytest.raises(vk.CacheError, match="batch manifest"):
        vk.BatchJob.load("job-x", cache=cache)
    with hostile_batch() as server, pytest.raises(vk.CacheError, match=str(path)):
        submit(images, server, cache)


def test_a_manifest_damaged_inside_is_one_error_naming_it_at_the_first_read(tmp_path):
    path = tmp_path / "answers.batches.sqlite"
    manifest = Manifest(path)
    manifest.save_job("job-1", provider="offline", model="m", prompt="p")
    rows = [(i, f"label-{i}-" + "x" * 200, f"key{i}", "send", None, 10) for i in range(3000)]
    manifest.add_rows("job-1", rows)
    manifest.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 40 * 4096
    data[20 * 4096 : 30 * 4096] = b"\xa5" * (10 * 4096)  # pages in the middle of the rows
    path.write_bytes(bytes(data))
    manifest = Manifest(path)  # the first pages are sound: it opens
    with pytest.raises(vk.CacheError, match="batch manifest") as caught:
        manifest.rows("job-1")
    assert str(path) in str(caught.value)
    assert not isinstance(caught.value.__cause__, Exception) or caught.value.__suppress_context__


# -- 19: a result before the job is done -------------------------------------------------------


def test_a_result_before_the_job_is_done_warns_once_and_counts_pending_not_failed(images, cache):
    with hostile_batch(polls=10_000) as server:
        job = submit(images, server, cache)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            first = job.result()
            job.result()
        early = [w for w in seen if issubclass(w.category, vk.BatchWarning)]
        assert len(early) == 1 and "pending" in str(early[0].message)
        assert early[0].filename == __file__  # names the caller's line
        usage = first.attrs["usage"]
        assert usage["pending"] == len(images) and usage["failed"] == 0
        assert first.error.str.startswith("pending: ").all()
        with pytest.raises(RuntimeError, match="in_progress"):
            job.result(strict=True)


def test_a_job_held_by_a_process_that_died_is_taken_over_when_its_lease_runs_out(images, cache):
    """The owner's claim lapses (it stopped renewing: it died); a submission waiting for it says
    so once, then carries on and sends every row once."""
    from visionkit.batch.claims import claim_job

    with hostile_batch(polls=10_000) as server:  # the batch runs on (and is billed once)
        job_id = submit(images, server, cache).id
        manifest = Manifest(manifest_path(cache))
        assert claim_job(manifest, job_id, "dead-process", lease=1.0) is None
        with pytest.warns(vk.BatchWarning, match="being submitted by another process"):
            again = submit(images, server, cache)  # waits out the lapsed lease, then goes on
        assert again.id == job_id
        assert len(server.batches) == 1  # it attached to the running batch
        assert server.billed_lines == len(images) and server.billed_twice == {}
