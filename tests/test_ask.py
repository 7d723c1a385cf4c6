"""df.vision.ask against the offline server, through the real openai SDK over real HTTP."""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import visionkit as vk
from visionkit import offline
from visionkit.query.plan import RESULT_COLUMNS


def make_images(folder, n, size=(48, 32), start=0):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        colour = ((i * 53) % 256, (i * 97) % 256, (i * 29) % 256)
        path = folder / f"img{i:03d}.png"
        Image.new("RGB", size, colour).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def frame(tmp_path):
    paths = make_images(tmp_path / "imgs", 6)
    labels = ["cat", "dog", "bird", "fish", "frog", "owl"]
    return pd.DataFrame({"path": paths, "label": labels}, index=[f"r{i}" for i in range(6)])


def test_ask_answers_every_row_and_a_rerun_sends_nothing(frame, server, client, cache):
    result = frame.vision.ask("Describe this image.", client=client, cache=cache, progress=False)
    assert list(result.index) == list(frame.index)
    # the planner's result columns, in the order help(vk.ask) lists them; each is checked below
    assert list(result.columns) == list(RESULT_COLUMNS)
    returns = inspect.getdoc(vk.ask).split("index with", 1)[1].split("(and the schema", 1)[0]
    assert re.findall(r"``(\w+)``", returns) == list(RESULT_COLUMNS)
    assert result["error"].isna().all(), result["error"].tolist()
    assert result["answer"].str.startswith(offline.PREFIX).all()
    assert "48x32" in result.loc["r0", "answer"] or "48 x 32" in result.loc["r0", "answer"]
    # usage is the provider's report: 1,601 image tokens + the text
    assert (result["prompt_tokens"] > 1601).all() and (result["completion_tokens"] > 0).all()
    # the estimate (image formula + 4 characters per token) is what the server charges
    assert (result["estimated_tokens"] == 1601 + 5).all()
    assert (result["estimated_tokens"] == result["prompt_tokens"]).all()
    assert not result["cached"].any() and (result["attempts"] == 1).all()
    usage = result.attrs["usage"]
    assert usage["requests"] == 6 and usage["answered"] == 6 and usage["cache_hits"] == 0
    assert usage["prompt_tokens"] == server.server.stats.prompt_tokens
    assert server.server.stats.chat_requests == 6

    again = frame.vision.ask("Describe this image.", client=client, cache=cache, progress=False)
    assert server.server.stats.chat_requests == 6  # nothing sent twice
    assert again["cached"].all() and (again["attempts"] == 0).all()
    assert again["answer"].tolist() == result["answer"].tolist()
    assert again["prompt_tokens"].tolist() == result["prompt_tokens"].tolist()
    assert again.attrs["usage"]["cache_hits"] == 6 and again.attrs["usage"]["requests"] == 0
    joined = frame.join(again)
    assert joined.shape == (6, 9)


def test_cache_key_is_image_content_not_path(frame, server, client, cache, tmp_path):
    frame.vision.ask("Describe.", client=client, cache=cache, progress=False)
    moved = frame.copy()
    for i, p in enumerate(frame["path"]):
        new = tmp_path / f"moved{i}.png"
        new.write_bytes(Path(p).read_bytes())
        moved.iloc[i, 0] = str(new)
    moved.index = range(6)
    result = moved.vision.ask("Describe.", client=client, cache=cache, progress=False)
    assert result["cached"].all() and server.server.stats.chat_requests == 6
    other = moved.vision.ask("Describe!", client=client, cache=cache, progress=False)
    assert not other["cached"].any() and server.server.stats.chat_requests == 12


def test_template_is_filled_from_each_row(frame, server, client, cache):
    result = frame.vision.ask("Is this a {label}?", client=client, cache=cache, progress=False)
    assert result["error"].isna().all()
    for label, answer in zip(frame["label"], result["answer"], strict=True):
        assert f'"Is this a {label}?"' in answer  # the offline server quotes the question


def test_missing_template_field_fails_before_anything_is_sent(frame, server, client, cache):
    with pytest.raises(vk.RequestError, match="needs 'colour', which is not a column"):
        frame.vision.ask("Is it {colour}?", client=client, cache=cache, progress=False)
    assert server.server.stats.requests == 0


def test_na_template_value_fails_only_that_row(frame, server, client, cache):
    frame.loc["r2", "label"] = None
    result = frame.vision.ask("Is this a {label}?", client=client, cache=cache, progress=False)
    assert "row 'r2'" not in result.loc["r2", "error"]  # the row is the index already
    assert "'label' is missing" in result.loc["r2", "error"]
    assert result.drop("r2")["error"].isna().all()
    assert server.server.stats.chat_requests == 5


def test_script_and_running_event_loop_and_async_twin(frame, server, client, cache):
    async def inside_a_running_loop():
        # what Jupyter does: a loop is already running when the cell calls ask()
        return frame.vision.ask("Describe.", client=client, cache=cache, progress=False)

    in_loop = asyncio.run(inside_a_running_loop())
    assert in_loop["error"].isna().all()

    async def twin():
        return await frame.vision.ask_async("Describe?", client=client, cache=False, progress=False)

    result = asyncio.run(twin())
    assert result["error"].isna().all() and not result["cached"].any()
    assert server.server.stats.chat_requests == 12


def test_the_same_image_twice_in_one_run_is_paid_once(tmp_path, server, client):
    paths = make_images(tmp_path / "dup", 3)
    frame = pd.DataFrame({"path": paths + paths + [paths[0]]})
    result = frame.vision.ask(
        "Describe.", client=client, cache=False, progress=False, concurrency=8
    )
    assert result["error"].isna().all()
    assert server.server.stats.chat_requests == 3
    assert result["cached"].sum() == 4 and result["answer"].nunique() == 3
    assert result.attrs["usage"]["prompt_tokens"] == server.server.stats.prompt_tokens
