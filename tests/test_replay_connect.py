"""Every way of connecting that can record can replay (issue 18, item 16): a named profile, a
custom ``base_url`` (with its key as ``api_key=`` or as a credential in the URL) and the offline
stand-in, for ``ask`` and for batch jobs, replayed by ``vk.connect(replay=...)`` with and
without ``base_url=``. Recorded against the offline stand-in over real HTTP through the real
openai SDK; the replay runs with the server refusing everyone, and must send it nothing."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from image_factory import photo, save

import visionkit as vk
from visionkit import offline
from visionkit.batch import ReplayedJob

TOKEN = "tok-replay-Hq93kZ"  # the server's key: never in a recording
MODEL = offline.DEFAULT_MODEL
PROMPT = "Describe this image."
COLUMNS = ["answer", "prompt_tokens", "completion_tokens", "cached", "attempts", "error"]


@pytest.fixture
def server(monkeypatch) -> Iterator[offline.OfflineServer]:
    for name in ("CI", "VISIONKIT_RECORD", "VISIONKIT_REPLAY"):
        monkeypatch.delenv(name, raising=False)
    with offline.OfflineServer(
        api_key=TOKEN, key_in=("bearer", "query:api-key"), upload_interval=0
    ) as srv:
        yield srv


def profile_for(server: offline.OfflineServer, name: str) -> vk.Provider:
    inet = vk.get_provider("inference.net")
    return inet.derive(
        name=name,
        base_url=server.base_url,
        api_key_env=None,
        default_model=MODEL,
        batch=dataclasses.replace(inet.batch, base_url=server.base_url, upload_interval=0),
    )


def named(server: offline.OfflineServer) -> tuple[dict[str, Any], str | None]:
    """A profile registered for the server (only in this case: with it registered, a bare
    ``base_url=`` to the same server would use it too)."""
    vk.register_provider(profile_for(server, "acme-replay"), replace=True)
    return {"provider": "acme-replay", "api_key": TOKEN}, server.base_url


def unregistered(server: offline.OfflineServer) -> tuple[dict[str, Any], str | None]:
    """A ``Provider`` passed to connect, never registered (so a replay cannot look it up)."""
    return {"provider": profile_for(server, "acme-unregistered"), "api_key": TOKEN}, server.base_url


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    paths = [save(photo(120 + 16 * i, 90, seed=i), tmp_path / f"p{i}.jpg") for i in range(3)]
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=["a", "b", "c"])


# How the recording connects: connect's keywords, and the base_url= a replay may name again.
Way = Callable[[offline.OfflineServer], tuple[dict[str, Any], str | None]]
WAYS: dict[str, Way] = {
    "named profile": named,
    "unregistered profile": unregistered,
    "base_url and api_key": lambda s: (
        {"base_url": s.base_url, "api_key": TOKEN, "model": MODEL},
        s.base_url,
    ),
    "base_url holding the key": lambda s: (
        {"base_url": f"{s.base_url}?api-key={TOKEN}", "model": MODEL},
        f"{s.base_url}?api-key={TOKEN}",
    ),
    "offline stand-in": lambda s: ({}, None),  # connect("auto") without a key
}


def record_and_replay(
    how: str, server: offline.OfflineServer, frame: pd.DataFrame, tmp_path, run
) -> None:
    """Record ``run(frame, client)`` connected ``how``, then replay it both ways."""
    options, url = WAYS[how](server)
    answers = tmp_path / "answers"
    live = offline.shared() if how == "offline stand-in" else server
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vk.OfflineWarning)  # said once a process
        recorder = vk.connect(record=answers, **options)
    recorded = run(frame, recorder, tmp_path / "rec-cache")
    assert recorded.error.isna().all(), recorded.error.dropna().tolist()
    text = (answers / "answers.jsonl").read_text()
    assert TOKEN not in text and len(text.splitlines()) == len(frame)

    server.api_key = "nobody-has-this"  # out of reach: a replay must not need it
    sent = (live.stats.chat_requests, live.stats.uploads, live.stats.batches_created)
    replays = {"without base_url": vk.connect(replay=answers)}
    if url is not None:
        replays["with base_url"] = vk.connect(replay=answers, base_url=url)
    for name, player in replays.items():
        assert player.recording.replaying and TOKEN not in repr(player), name
        replayed = run(frame, player, tmp_path / f"{name}-cache")
        assert replayed.error.isna().all(), (name, replayed.error.dropna().tolist())
        pd.testing.assert_frame_equal(replayed[COLUMNS], recorded[COLUMNS], obj=name)
        assert (live.stats.chat_requests, live.stats.uploads, live.stats.batches_created) == sent


def asked(frame: pd.DataFrame, client: vk.Client, cache) -> pd.DataFrame:
    return frame.vision.ask(PROMPT, client=client, cache=cache, progress=False)


def submitted(frame: pd.DataFrame, client: vk.Client, cache) -> pd.DataFrame:
    job = frame.vision.submit(PROMPT, client=client, cache=cache, progress=False, upload_interval=0)
    if client.recording.replaying:
        assert isinstance(job, ReplayedJob)
    assert job.wait(progress=False).status == "completed"
    return job.result()


@pytest.mark.parametrize("how", sorted(WAYS))
def test_an_ask_recorded_any_way_replays_with_or_without_base_url(how, server, frame, tmp_path):
    record_and_replay(how, server, frame, tmp_path, asked)


@pytest.mark.parametrize("how", sorted(WAYS))
def test_a_batch_job_recorded_any_way_replays_with_or_without_base_url(
    how, server, frame, tmp_path
):
    record_and_replay(how, server, frame, tmp_path, submitted)
