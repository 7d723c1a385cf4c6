"""Batch jobs under record and replay (issue 11): a job recorded against the offline stand-in's
Batch API acting as a live provider under another name (real openai SDK, real HTTP), then
replayed with that provider out of reach and no key."""

from __future__ import annotations

import dataclasses
import json

import openai
import pandas as pd
import pytest
from image_factory import photo, save

import visionkit as vk
from visionkit import offline
from visionkit.batch import ReplayedJob
from visionkit.errors import ReplayError

SECRET = "sk-acme-batch-live-key-77"
PROMPT = "Describe this image."
KEY_ENV = "ACME_BATCH_TEST_KEY"


@pytest.fixture
def acme(monkeypatch):
    """A 'live' provider with a Batch API: the offline stand-in under another name."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("VISIONKIT_RECORD", raising=False)
    monkeypatch.delenv("VISIONKIT_REPLAY", raising=False)
    with offline.serve(api_key=SECRET, upload_interval=0) as url:
        inet = vk.get_provider("inference.net")
        profile = dataclasses.replace(
            inet,
            name="acme-batch",
            base_url=url,
            api_key_env=KEY_ENV,
            batch=dataclasses.replace(inet.batch, base_url=url, upload_interval=0),
        )
        vk.register_provider(profile, replace=True)
        yield url


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    """Five rows: four images, the last one twice (a repeat), on a non-range integer index."""
    paths = [str(save(photo(300 + 20 * i, 200, seed=i), tmp_path / f"p{i}.jpg")) for i in range(4)]
    return pd.DataFrame({"path": [*paths, paths[3]]}, index=[10, 20, 30, 40, 50])


def submit(df, client, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("upload_interval", 0)
    return df.vision.submit(PROMPT, client=client, **kw)


def store(answers) -> list[dict]:
    return [json.loads(line) for line in (answers / "answers.jsonl").read_text().splitlines()]


def files_at(url) -> list:
    """The files the stand-in holds, listed through its own API."""
    with openai.OpenAI(base_url=url, api_key=url.server.api_key) as sdk:
        return list(sdk.files.list())


def record(frame, answers, cache):
    """The recorded run: row 10 bought by an ask before recording began, the rest by a job."""
    live = vk.connect("acme-batch", api_key=SECRET)
    frame.iloc[:1].vision.ask(PROMPT, client=live, cache=cache, progress=False)
    recorder = vk.connect("acme-batch", api_key=SECRET, record=answers)
    job = submit(frame, recorder, cache=cache)
    assert job.wait(progress=False).status == "completed"
    return job


def test_a_recorded_job_replays_the_same_result_without_sending_or_a_key(
    frame, acme, tmp_path, monkeypatch
):
    answers, cache = tmp_path / "answers", tmp_path / "cache" / "answers.sqlite"
    job = record(frame, answers, cache)
    recorded = job.result()
    stats = acme.server.stats
    assert (stats.chat_requests, stats.uploads, stats.batch_lines_answered) == (1, 1, 3)
    # Every row reported as bought, the cache hit too (first use in this process), and the
    # repeated image as the row it repeats; the frame's own labels.
    assert list(recorded.index) == list(frame.index)
    assert recorded.error.isna().all() and not recorded.cached.any()
    assert recorded.loc[10, "batch_id"] is None and recorded.loc[20:50, "batch_id"].notna().all()
    assert recorded.loc[50].equals(recorded.loc[40].rename(50))
    usage = recorded.attrs["usage"]
    assert (usage["answered"], usage["cache_hits"], usage["requests"]) == (5, 0, 4)
    # The store: one record per answer used, with the batch that delivered it; no key.
    records = store(answers)
    assert len(records) == 4 and {r["provider"] for r in records} == {"acme-batch"}
    batched = [r for r in records if "batch_id" in r]
    assert len(batched) == 3 and {r["batch_id"] for r in batched} == set(recorded.batch_id[1:])
    assert all(r["prompt"] == PROMPT and len(r["images"]) == 1 for r in records)
    assert SECRET not in (answers / "answers.jsonl").read_text()

    # Replay: the provider's key is gone, the server refuses everyone; nothing may reach it.
    held = [f.id for f in files_at(acme)]  # the input file and the output file
    acme.server.api_key = "nobody-has-this"
    monkeypatch.delenv(KEY_ENV, raising=False)
    player = vk.connect("acme-batch", replay=answers)
    fresh_cache = tmp_path / "ci-cache" / "answers.sqlite"
    replay = submit(frame, player, cache=fresh_cache)
    assert isinstance(replay, ReplayedJob) and replay.id == job.id
    assert replay.wait(progress=False) is replay and replay.status == "completed"
    replayed = replay.result()
    pd.testing.assert_frame_equal(replayed, recorded)
    same = ("rows", "answered", "cache_hits", "failed", "requests", "prompt_tokens")
    assert {k: replayed.attrs["usage"][k] for k in same} == {k: usage[k] for k in same}
    assert (replayed.attrs["usage"]["files"], replayed.attrs["usage"]["batches"]) == (0, 0)
    assert vk.BatchJob.load(job.id, client=player) is replay
    assert replay.batches.empty
    # Nothing was written, uploaded or created: no files at the stand-in, no local job.
    assert (stats.uploads, stats.batches_created, stats.chat_requests) == (1, 1, 1)
    assert [f.id for f in files_at(acme)] == held and len(held) == 2
    assert not fresh_cache.parent.exists()
    # Asked again in the same process, the answers are cache hits (ask's rule).
    again = submit(frame, player).result()
    assert again.cached.all() and again.attrs["usage"]["prompt_tokens"] == 0


def test_a_replay_needs_no_server_at_all(frame, acme, tmp_path, monkeypatch):
    answers, cache = tmp_path / "answers", tmp_path / "c.sqlite"
    recorded = record(frame, answers, cache).result()
    acme.server.stop()  # unreachable from now on
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("VISIONKIT_REPLAY", str(answers))
    monkeypatch.setenv("CI", "true")  # strict: every row must be recorded, and is
    replay = submit(frame, vk.connect("acme-batch"))
    pd.testing.assert_frame_equal(replay.wait().result(), recorded)
    assert vk.BatchJob.load(replay.id) is replay
    with pytest.raises(KeyError, match="not submitted in this process"):
        vk.BatchJob.load("job-from-another-session")


def test_rows_never_recorded_are_errors_or_a_replay_error_when_strict(frame, acme, tmp_path):
    answers, cache = tmp_path / "answers", tmp_path / "c.sqlite"
    recorder = vk.connect("acme-batch", api_key=SECRET, record=answers)
    submit(frame.iloc[:2], recorder, cache=cache).wait(progress=False)
    uploads = acme.server.stats.uploads

    lenient = vk.connect("acme-batch", replay=answers, strict=False)
    job = submit(frame, lenient)
    result = job.result()
    assert job.status == "incomplete"
    assert result.loc[[10, 20], "error"].isna().all()
    missing = result.loc[[30, 40, 50], "error"]
    assert missing.str.startswith("ReplayError: not recorded in").all()
    assert missing.str.contains("VISIONKIT_RECORD=").all()
    assert result.attrs["usage"]["failed"] == 3

    strict = vk.connect("acme-batch", replay=answers, strict=True)
    with pytest.raises(ReplayError, match=r"3 request\(s\).*rows 30, 40, 50") as info:
        submit(frame, strict)
    assert info.value.partial.answer.notna().sum() == 2
    assert acme.server.stats.uploads == uploads  # a replay uploads nothing


def test_a_dry_run_under_replay_estimates_as_usual(frame, acme, tmp_path):
    answers = tmp_path / "answers"
    recorder = vk.connect("acme-batch", api_key=SECRET, record=answers)
    submit(frame.iloc[:2], recorder, cache=tmp_path / "c.sqlite").wait(progress=False)
    player = vk.connect("acme-batch", replay=answers, strict=True)
    dry = submit(frame, player, dry_run=True)
    assert dry.cached.tolist() == [True, True, False, False, False]
    assert dry.estimated_tokens.notna().all() and dry.attrs["usage"]["requests"] == 2
    live = submit(frame, vk.connect("acme-batch", api_key=SECRET), dry_run=True, cache=False)
    assert dry.estimated_tokens.tolist() == live.estimated_tokens.tolist()


def test_answers_collected_after_load_in_a_new_session_reach_the_recording(
    frame, acme, tmp_path, monkeypatch
):
    answers, cache = tmp_path / "answers", tmp_path / "c.sqlite"
    monkeypatch.setenv(KEY_ENV, SECRET)
    acme.server.pause_batches()
    job = submit(frame, vk.connect("acme-batch", record=answers), cache=cache)
    assert job.refresh().status == "in_progress"  # the kernel dies here
    assert not answers.exists()
    acme.server.resume_batches()
    # A new session with the recording on through the environment: load, collect, show.
    monkeypatch.setenv("VISIONKIT_RECORD", str(answers))
    loaded = vk.BatchJob.load(job.id, cache=cache)
    assert loaded.recording is not None and loaded.recording.path == answers
    loaded.wait(progress=False, poll=0.05)
    by_key = {r["key"]: r for r in store(answers)}  # recorded when collected
    result = loaded.result()
    assert result.error.isna().all() and len(by_key) == 4
    assert {r["answer"] for r in by_key.values()} == set(result.answer)
    assert {r["batch_id"] for r in by_key.values()} == set(result.batch_id)


def test_a_job_collected_without_a_recording_is_recorded_by_its_result(frame, acme, tmp_path):
    answers, cache = tmp_path / "answers", tmp_path / "c.sqlite"
    plain = vk.connect("acme-batch", api_key=SECRET)
    job = submit(frame, plain, cache=cache).wait(progress=False)
    assert not answers.exists()
    recorder = vk.connect("acme-batch", api_key=SECRET, record=answers)
    shown = vk.BatchJob.load(job.id, client=recorder, cache=cache).result()
    records = store(answers)
    assert sorted(r["answer"] for r in records) == sorted(set(shown.answer))
    assert {r["batch_id"] for r in records} == set(shown.batch_id)
    # ...and replays as that job showed it
    player = vk.connect("acme-batch", replay=answers, strict=True)
    pd.testing.assert_frame_equal(submit(frame, player).result(), shown)
