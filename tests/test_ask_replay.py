"""Record answers once, replay them with no key and no network (issue 11), in-process."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.errors import ReplayError
from visionkit.query.cache import Cache

SECRET = "sk-recorded-live-key-42"
COLUMNS = ["answer", "prompt_tokens", "completion_tokens", "estimated_tokens", "cached", "attempts"]


@pytest.fixture
def acme(monkeypatch):
    """A 'live' provider that is the offline stand-in under another name."""
    with offline.serve(api_key=SECRET) as url:
        profile = dataclasses.replace(
            vk.get_provider("inference.net"), name="acme-test", base_url=url, api_key_env=None
        )
        vk.register_provider(profile, replace=True)
        yield url


@pytest.fixture
def frame(tmp_path):
    return pd.DataFrame({"path": make_images(tmp_path / "imgs", 4)}, index=list("abcd"))


def test_a_recording_replays_the_same_result_without_sending(frame, acme, tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    answers = tmp_path / "answers"
    cache = tmp_path / "c.sqlite"
    live = vk.connect("acme-test", api_key=SECRET)
    # one answer was bought before recording began: the recording still gets it
    frame.iloc[:1].vision.ask("Describe.", client=live, cache=cache, progress=False)
    recorder = vk.connect("acme-test", api_key=SECRET, record=answers)
    recorded = frame.vision.ask("Describe.", client=recorder, cache=cache, progress=False)
    assert acme.server.stats.chat_requests == 4  # 1 before + 3 while recording
    # reported as bought, so the replay can show the same (the cache hit included)
    assert not recorded["cached"].any() and (recorded["attempts"] == 1).all()
    assert recorded.attrs["usage"]["prompt_tokens"] == recorded["prompt_tokens"].sum()
    lines = (answers / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 4 and SECRET not in "".join(lines)

    acme.server.api_key = "nobody-has-this"  # the provider is out of reach for the replay
    player = vk.connect("acme-test", replay=answers)
    assert player.recording.replaying and player.base_url == recorder.base_url
    replayed = frame.vision.ask("Describe.", client=player, progress=False)
    pd.testing.assert_frame_equal(replayed[COLUMNS], recorded[COLUMNS])
    for name in ("requests", "answered", "cache_hits", "prompt_tokens", "completion_tokens"):
        assert replayed.attrs["usage"][name] == recorded.attrs["usage"][name], name
    assert acme.server.stats.chat_requests == 4  # nothing was sent
    again = frame.vision.ask("Describe.", client=player, progress=False)
    assert again["cached"].all()  # later uses in the same process are cache hits


def test_a_request_never_recorded_is_an_error_that_says_how(frame, acme, tmp_path):
    answers = tmp_path / "answers"
    recorder = vk.connect("acme-test", api_key=SECRET, record=answers)
    frame.iloc[:2].vision.ask("Describe.", client=recorder, cache=False, progress=False)
    lenient = vk.connect("acme-test", replay=answers, strict=False)
    result = frame.vision.ask("Describe.", client=lenient, progress=False)
    assert result.loc[["a", "b"], "error"].isna().all()
    assert result.loc["c", "error"].startswith("ReplayError: not recorded in")
    assert "VISIONKIT_RECORD=" in result.loc["c", "error"]
    strict = vk.connect("acme-test", replay=answers, strict=True)
    with pytest.raises(ReplayError, match=r"2 request\(s\).*rows 'c', 'd'") as info:
        frame.vision.ask("Describe.", client=strict, progress=False)
    assert info.value.partial["answer"].notna().sum() == 2
    assert acme.server.stats.chat_requests == 2


def test_environment_variables_and_ci_default(frame, acme, tmp_path, monkeypatch):
    answers = tmp_path / "answers"
    monkeypatch.setenv("VISIONKIT_RECORD", str(answers))
    recorder = vk.connect("acme-test", api_key=SECRET)
    assert recorder.recording is not None and not recorder.recording.replaying
    frame.iloc[:1].vision.ask("Describe.", client=recorder, cache=False, progress=False)
    with pytest.raises(ValueError, match="cannot both be on"):
        vk.connect("acme-test", replay=answers)
    monkeypatch.delenv("VISIONKIT_RECORD")
    monkeypatch.setenv("VISIONKIT_REPLAY", str(answers))
    monkeypatch.setenv("CI", "true")
    player = vk.connect()  # auto: the one identity in the store, no key needed
    assert player.provider.name == "acme-test" and player.recording.strict
    monkeypatch.setenv("CI", "0")
    assert not vk.connect().recording.strict
    with pytest.raises(ValueError, match="holds answers from acme-test"):
        vk.connect("openai")
    monkeypatch.setenv("VISIONKIT_REPLAY", str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="Record it first"):
        vk.connect()


def test_a_store_is_sorted_diff_friendly_and_holds_no_images(frame, acme, tmp_path):
    answers = tmp_path / "answers"
    recorder = vk.connect("acme-test", api_key=SECRET, record=answers)
    with Cache(tmp_path / "c.sqlite") as cache:
        results = {
            prompt: frame.vision.ask(prompt, client=recorder, cache=cache, progress=False)
            for prompt in ("Describe.", "Is it red?")
        }
    text = (answers / "answers.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["key"] for r in records] == sorted(r["key"] for r in records)
    assert {r["prompt"] for r in records} == set(results) and len(records) == 2 * len(frame)
    # each record is the row it answered: the image by its sha256, then what the run reported
    rows = {hashlib.sha256(Path(p).read_bytes()).hexdigest(): i for i, p in frame["path"].items()}
    identity = ["provider", "base_url", "model", "system"]
    reported = ["answer", "prompt_tokens", "completion_tokens", "estimated_tokens", "attempts"]
    for record in records:
        assert next(iter(record)) == "key"  # each line starts with what it is sorted by
        [digest] = record["images"]
        row = results[record["prompt"]].loc[rows[digest]]
        assert {k: record[k] for k in reported} == {k: row[k] for k in reported}
        assert record["provider"] == "acme-test" and record["system"] is None
        assert (record["base_url"], record["model"]) == (recorder.base_url, recorder.model)
        assert sorted(record) == sorted(
            ["key", "prompt", "images", *identity, *reported, "latency_s", "checksum"]
        )
        assert 0 < record["latency_s"] < 60  # seconds the answer took, for evaluations
    assert max(map(len, text.splitlines())) < 1000 and "data:image" not in text
