"""Batch jobs (df.vision.submit / vk.BatchJob) against the offline stand-in's Batch API, over
real HTTP through the real openai SDK."""

from __future__ import annotations

import _thread
import asyncio
import threading
from pathlib import Path

import httpx
import offline_helpers
import openai
import pandas as pd
import pytest
from image_factory import photo, save

import visionkit as vk
from visionkit import offline
from visionkit.batch.manifest import Manifest, manifest_path

server = offline_helpers.server  # the shared fixture: the OfflineServer, uploads unpaced

PROMPT = "Describe this image."


@pytest.fixture
def images(tmp_path) -> pd.DataFrame:
    paths = [save(photo(320 + 16 * i, 240, seed=i), tmp_path / f"p{i}.jpg") for i in range(10)]
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=[f"r{i}" for i in range(10)])


@pytest.fixture
def client(server):
    return vk.connect("offline", base_url=server.base_url)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache" / "answers.sqlite"


def run(df, client, cache, **kw):
    kw.setdefault("upload_interval", 0)
    kw.setdefault("progress", False)
    return df.vision.submit(PROMPT, client=client, cache=cache, **kw)


def test_a_job_sharded_into_files_with_one_expiring_is_finished_by_a_second_submit(
    images, server, client, cache
):
    server.inject_batch(expire_fraction=0.5)  # the first batch expires half-way
    job = run(images, client, cache, max_requests_per_file=4)
    assert len(job.batches) == 3  # 10 rows, at most 4 lines a file
    job.wait(progress=False, resubmit=False)  # (wait sending them itself: test_batch_scale)
    assert job.status == "incomplete"
    first = job.result()
    unanswered = first.error.notna()
    assert unanswered.sum() == 2
    assert first.error[unanswered].str.startswith("batch_expired").all()
    again = run(images, client, cache, max_requests_per_file=4)
    assert again.id == job.id  # the same arguments: the same job
    again.wait(progress=False)
    result = again.result()
    assert result.error.isna().all() and result.answer.str.startswith(offline.PREFIX).all()
    assert list(result.index) == list(images.index)
    stats = server.stats
    assert stats.batch_lines_answered == len(images)  # each row paid once
    assert stats.paid_twice == {}
    assert len(again.batches) == 4 and again.status == "completed"


def test_answers_are_asks_answers_and_land_in_the_cache(images, server, client, cache):
    job = run(images, client, cache).wait(progress=False)
    result = job.result()
    assert result.attrs["usage"]["answered"] == len(images)
    # a later ask on the same rows costs nothing: every row is a cache hit
    asked = images.vision.ask(PROMPT, client=client, cache=cache, progress=False)
    assert asked.cached.all() and server.stats.chat_requests == 0
    pd.testing.assert_series_equal(asked.answer, result.answer)
    # ...and a fresh ask (no cache) gets the same answers synchronously
    fresh = images.vision.ask(PROMPT, client=client, cache=False, progress=False)
    pd.testing.assert_series_equal(fresh.answer, result.answer)
    assert result.prompt_tokens.tolist() == fresh.prompt_tokens.tolist()
    assert set(result.columns) >= set(fresh.columns) | {"batch_id"}


def test_planning_is_asks_hits_repeats_and_bad_rows_never_reach_a_file(
    images, tmp_path, server, client, cache
):
    images.vision.ask(PROMPT, client=client, cache=cache, progress=False, image_column="path").iloc[
        :3
    ]
    extra = pd.DataFrame(
        {"path": [images.path.iloc[5], str(tmp_path / "missing.jpg")]}, index=["dup", "bad"]
    )
    frame = pd.concat([images, extra])
    before = server.stats.chat_requests
    server.reset_stats()
    job = run(frame, client, cache)
    plan = job.result()
    assert server.stats.batches_created == 0  # every readable row was already in the cache
    assert plan.cached.sum() == len(images) + 1  # the duplicate image too
    assert plan.loc["bad", "error"].startswith("ImageError")
    assert before == len(images)


def test_a_row_breaking_the_rules_is_its_error_and_the_rest_are_sent(tmp_path, server, client):
    paths = [save(photo(300, 200, seed=i), tmp_path / f"q{i}.jpg") for i in range(3)]
    df = pd.DataFrame({"a": [str(p) for p in paths], "b": [str(p) for p in paths]})
    df.loc[1, "b"] = None  # no second image: that row's error
    job = run(df, client, tmp_path / "c.sqlite", image_column=["a", "b"]).wait(progress=False)
    result = job.result()
    assert result.error.isna().tolist() == [True, False, True]
    assert "no image in column 'b'" in result.error[1]
    assert server.stats.batch_lines == 2


def test_dry_run_plans_files_bytes_and_upload_time_without_the_network(images, server, cache):
    dry = images.vision.submit(
        PROMPT, cache=cache, dry_run=True, max_requests_per_file=3, progress=False
    )
    usage = dry.attrs["usage"]
    assert usage["files"] == 4 and usage["requests"] == len(images)
    assert usage["upload_seconds"] == 3 * 60  # inference.net's pace: one upload a minute
    files = dry.attrs["files"]
    assert files.requests.tolist() == [3, 3, 3, 1]
    assert files.bytes.sum() == usage["file_bytes"] > usage["request_bytes"]
    assert dry.file.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    asked = images.vision.ask(PROMPT, cache=cache, dry_run=True, progress=False)
    assert dry.estimated_tokens.tolist() == asked.estimated_tokens.tolist()  # one computation
    assert usage["estimated_tokens"] == asked.attrs["usage"]["estimated_tokens"]
    assert server.stats.requests == 0


def test_budget_refuses_before_anything_is_uploaded(images, server, client, cache):
    with pytest.raises(vk.BudgetExceeded, match="nothing was uploaded"):
        run(images, client, cache, budget_tokens=1000)
    assert server.stats.uploads == 0
    assert not list((cache.parent / "batch-files").rglob("*.jsonl"))
    job = run(images, client, cache, budget_tokens=10**6)  # within budget: it goes
    assert len(job.batches) == 1
    # the refused pass's files never made a batch: each row was sent once
    assert job.wait(progress=False).result().attempts.eq(1).all()


def test_a_crash_between_upload_and_batch_creation_loses_nothing_and_pays_nothing_twice(
    images, server, client, cache, monkeypatch
):
    real = openai.resources.batches.Batches.create
    calls = {"n": 0}

    def create_then_crash(self, **kw):
        calls["n"] += 1
        batch = real(self, **kw)  # the provider made it...
        if calls["n"] == 2:
            raise KeyboardInterrupt  # ...but the answer is lost (kill -9, power cut)
        return batch

    monkeypatch.setattr(openai.resources.batches.Batches, "create", create_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(images, client, cache, max_requests_per_file=4)
    monkeypatch.setattr(openai.resources.batches.Batches, "create", real)
    assert server.stats.uploads == 2 and server.stats.batches_created == 2
    job = run(images, client, cache, max_requests_per_file=4)
    job.wait(progress=False)
    assert server.stats.uploads == 3  # the two uploaded files were not uploaded again
    assert server.stats.batches_created == 3  # the lost batch was found and adopted
    assert job.result().error.isna().all()
    assert server.stats.batch_lines_answered == len(images) and server.stats.paid_twice == {}


def test_per_line_failures_are_row_errors_and_only_those_rows_are_sent_again(images, cache):
    with offline.serve(upload_interval=0, line_fail_rate=0.5, line_fail_status=503) as url:
        client = vk.connect("offline", base_url=url)
        result = run(images, client, cache).wait(progress=False, resubmit=False).result()
        failed = result.error.notna()
        assert 0 < failed.sum() < len(images)
        assert result.error[failed].str.startswith("InternalServerError (503): ").all()
        assert result.attrs["usage"]["failed"] == failed.sum()
        for _ in range(10):  # each resubmission sends only the rows still without an answer
            sent_before = url.server.stats.batch_lines
            job = run(images, client, cache).wait(progress=False, resubmit=False)
            result = job.result()
            assert url.server.stats.batch_lines - sent_before == failed.sum()
            failed = result.error.notna()
            if not failed.any():
                break
        assert result.error.isna().all()
        assert url.server.stats.batch_lines_answered == len(images)
        assert url.server.stats.paid_twice == {}


def test_interrupting_wait_stops_the_wait_not_the_batch(tmp_path, images, cache):
    with offline.serve(upload_interval=0, batch_time=3) as url:
        client = vk.connect("offline", base_url=url)
        job = run(images, client, cache)
        timer = threading.Timer(0.5, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            job.wait(progress=False)
        assert job.status == "in_progress"
        assert job.wait(progress=False).status == "completed"  # the batch went on
        assert url.server.stats.batch_lines_answered == len(images)


def test_wait_async_in_a_running_event_loop_and_load_after_a_restart(images, client, cache):
    job = run(images, client, cache)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await job.wait_async(progress=False)
        task.cancel()
        return ticks

    assert asyncio.run(main()) > 0  # the loop kept running while waiting
    reloaded = vk.BatchJob.load(job.id, client=client, cache=cache)
    pd.testing.assert_frame_equal(reloaded.result(), job.result())
    jobs = vk.batch_jobs(cache)
    assert jobs.job_id.tolist() == [job.id] and jobs.lines.tolist() == [len(images)]


def test_client_pacing_avoids_429s_and_429s_are_honoured(images, cache, tmp_path):
    with offline.serve(upload_interval=0.4) as url:
        client = vk.connect("offline", base_url=url)
        run(images, client, cache, max_requests_per_file=4, upload_interval=0.4)
        assert url.server.stats.uploads == 3 and url.server.stats.uploads_refused == 0
    with offline.serve(upload_interval=0.4) as url:
        client = vk.connect("offline", base_url=url)
        run(images, client, tmp_path / "other.sqlite", max_requests_per_file=4)
        assert url.server.stats.uploads == 3 and url.server.stats.uploads_refused >= 1


def test_schema_fields_become_columns(images, client, cache):
    schema = {
        "type": "object",
        "properties": {"width": {"type": "integer"}, "description": {"type": "string"}},
        "required": ["width", "description"],
    }
    result = run(images, client, cache, schema=schema).wait(progress=False).result()
    assert result.width.tolist() == [320 + 16 * i for i in range(10)]


def test_connect_points_batch_jobs_at_the_providers_batch_url():
    assert vk.connect("inference.net", api_key="k").batch_base_url == (
        "https://batch.inference.net/v1"
    )
    local = vk.connect(base_url="http://127.0.0.1:9/v1", model="m")
    assert local.batch_base_url == "http://127.0.0.1:9/v1"
    assert vk.connect("inference.net", api_key="k", batch_base_url="https://b/v1").batch_base_url


def test_the_key_is_never_written_to_the_manifest(images, cache):
    secret = "sk-batch-manifest-secret"
    with offline.serve(upload_interval=0, api_key=secret) as url:
        client = vk.connect("offline", base_url=url, api_key=secret)
        job = run(images, client, cache).wait(progress=False)
        assert secret not in repr(job) and secret not in repr(client)
    Manifest(manifest_path(cache)).close()
    for path in cache.parent.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_same_tokens_size_drops_only_pixels_the_formula_does_not_price():
    from visionkit.providers import floor_side, same_tokens_size

    inet, oai = vk.get_provider("inference.net"), vk.get_provider("openai")
    assert (floor_side(inet), floor_side(oai)) == (560, 512)
    # inference.net prices every pixel between 560 and 1,120 px: nothing to drop
    assert same_tokens_size(1120, 747, inet) == (1120, 747)
    assert same_tokens_size(400, 300, inet) == (400, 300)  # never below what it has
    # OpenAI's 512 px tiles: 1000 x 700 and 733 x 513 are both 2 x 2 tiles
    assert same_tokens_size(1000, 700, oai) == (733, 513)
    for w, h in [(1000, 700), (2048, 1536), (640, 480), (1500, 300)]:
        small = same_tokens_size(w, h, oai)
        assert oai.estimate(*small) == oai.estimate(w, h) and small[0] <= w


def test_compact_encoding_is_smaller_at_the_same_token_estimate(images, cache):
    from visionkit.query.body import image_tokens

    path = images.path.iloc[0]
    default = vk.encode_image(path)
    compact = vk.encode_image(path, compact=True)
    provider = vk.get_provider("inference.net")
    assert len(compact) < len(default)  # these test photos are saved at quality 75 already
    assert image_tokens([compact], provider) == image_tokens([default], provider)
    plain = images.vision.submit(PROMPT, cache=cache, dry_run=True, progress=False)
    small = images.vision.submit(PROMPT, cache=cache, dry_run=True, progress=False, compact=True)
    assert small.estimated_tokens.tolist() == plain.estimated_tokens.tolist()
    assert small.attrs["usage"]["request_bytes"] < plain.attrs["usage"]["request_bytes"]


def test_a_frame_of_image_bytes_is_one_job_across_calls(images, client, cache):
    frame = pd.DataFrame({"image": [Path(p).read_bytes() for p in images.path]})
    job = run(frame, client, cache).wait(progress=False)
    assert job.result().error.isna().all()
    assert run(frame, client, cache).id == job.id


def test_error_answers_delivered_in_the_output_file_are_row_errors_never_answers(images, cache):
    """Some servers put error responses (with their status) in the output file: those rows are
    errors, not answers of None in the cache, and the next submit sends exactly them again."""
    serve = dict(upload_interval=0, line_fail_rate=0.5, line_fail_status=503)
    with offline.serve(**serve, batch_errors_in_output=True) as url:
        client = vk.connect("offline", base_url=url)
        result = run(images, client, cache).wait(progress=False, resubmit=False).result()
        failed = result.error.notna()
        assert 0 < failed.sum() < len(images)
        assert result.error[failed].str.startswith("InternalServerError (503): ").all()
        assert result.answer[failed].isna().all() and result.answer[~failed].notna().all()
        sent_before = url.server.stats.batch_lines
        again = run(images, client, cache).wait(progress=False, resubmit=False).result()
        assert url.server.stats.batch_lines - sent_before == failed.sum()  # only those rows
        assert again.answer[~failed].equals(result.answer[~failed])


def test_a_transient_error_looking_for_a_lost_batch_never_creates_a_second_batch(
    images, server, client, cache, monkeypatch
):
    real_create, real_list = (
        openai.resources.batches.Batches.create,
        openai.resources.batches.Batches.list,
    )

    def create_then_crash(self, **kw):
        real_create(self, **kw)  # the provider made it, but the answer is lost
        raise KeyboardInterrupt

    monkeypatch.setattr(openai.resources.batches.Batches, "create", create_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(images, client, cache)
    monkeypatch.setattr(openai.resources.batches.Batches, "create", real_create)

    def list_unavailable(self, **kw):
        request = httpx.Request("GET", f"{client.base_url}/batches")
        response = httpx.Response(503, request=request)
        raise openai.InternalServerError("Service Unavailable", response=response, body=None)

    monkeypatch.setattr(openai.resources.batches.Batches, "list", list_unavailable)
    with pytest.raises(openai.InternalServerError):
        run(images, client, cache)  # cannot tell whether the batch exists: it does not guess
    assert server.stats.batches_created == 1
    monkeypatch.setattr(openai.resources.batches.Batches, "list", real_list)
    job = run(images, client, cache).wait(progress=False)  # the listing works again: adopted
    assert server.stats.batches_created == 1 and server.stats.uploads == 1
    assert job.result().error.isna().all() and server.stats.paid_twice == {}
