"""The planner seam (AskOptions -> make_plan -> plan_rows) and what a call opens and closes."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from pathlib import Path

import pandas as pd
import pytest

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.query.ask import ask, ask_async
from visionkit.query.cache import Cache
from visionkit.query.options import AskOptions, check_signature
from visionkit.query.plan import make_plan, plan_rows, prepare_row


def open_files(path: Path) -> list[str]:
    """Which of this process's file descriptors point at ``path`` (or its -wal/-shm)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            out.append(target)
    return out


def test_entry_points_take_exactly_the_options_fields():
    check_signature(ask, leading=["data", "prompt"])
    check_signature(ask_async, leading=["data", "prompt"])
    df = pd.DataFrame({"path": ["a.png"]})
    check_signature(df.vision.ask, leading=["prompt"])
    check_signature(df.vision.ask_async, leading=["prompt"])

    def drifted(data, prompt, *, client=None, concurrency=16, **request_options):
        pass

    with pytest.raises(TypeError, match="differ from AskOptions"):
        check_signature(drifted, leading=["data", "prompt"])


def test_each_parameter_is_documented_once_in_help():
    for function in (ask, ask_async):
        doc = inspect.getdoc(function)
        assert doc.count("**Parameters**") == 1
        for name in ("client", "concurrency", "budget_tokens", "max_side", "cache"):
            assert doc.count(f"``{name}``:") == 1, (function.__name__, name)
        assert "``{{`` and ``}}``" in doc  # how to write a literal brace


def test_options_are_checked_when_made():
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
        AskOptions(concurrency=0)
    with pytest.raises(ValueError, match="0 disables retries"):
        AskOptions(max_retries=-1)
    with pytest.raises(TypeError, match="messages="):
        AskOptions(request_options={"messages": []})
    with pytest.raises(TypeError, match="not both"):
        AskOptions(schema={"properties": {"x": {}}}, request_options={"response_format": {}})
    options = AskOptions(max_side=512, request_options={"temperature": 0})
    assert options.encode_options == {"max_side": 512}
    assert options.replace(concurrency=3).concurrency == 3


def test_ask_closes_the_cache_file_it_opened_and_leaves_yours_open(tmp_path, client):
    frame = pd.DataFrame({"path": make_images(tmp_path / "i", 3)})
    path = tmp_path / "c.sqlite"
    for _ in range(3):
        frame.vision.ask("Describe.", client=client, cache=path, progress=False)
    frame.vision.ask("Describe.", client=client, cache=path, dry_run=True, progress=False)
    with pytest.raises(vk.BudgetExceeded):
        frame.vision.ask("Describe!", client=client, cache=path, budget_tokens=1, progress=False)

    async def twin():
        return await frame.vision.ask_async("Describe.", client=client, cache=path, progress=False)

    assert asyncio.run(twin())["cached"].all()
    assert open_files(path) == []
    with Cache(path) as mine:
        frame.vision.ask("Describe.", client=client, cache=mine, progress=False)
        assert open_files(path) != []  # the caller's cache stays open for them
        assert len(mine) == 3


def test_plan_rows_gives_each_rows_decision_in_order(tmp_path, client, server):
    paths = make_images(tmp_path / "p", 3)
    frame = pd.DataFrame(
        {
            "path": [paths[0], paths[1], paths[0], str(tmp_path / "missing.png"), paths[2]],
            "label": ["cat", "dog", "cat", "owl", None],
        },
        index=list("abcde"),
    )
    with Cache(tmp_path / "c.sqlite") as cache:
        frame.iloc[[1]].vision.ask("Is it a {label}?", client=client, cache=cache, progress=False)
        options = AskOptions(client=client, cache=cache)
        with make_plan(frame, "Is it a {label}?", options) as plan:
            rows = list(plan_rows(plan))
        assert len(cache) == 1  # a caller's cache is not closed by the plan
    assert [r.label for r in rows] == list("abcde")
    assert [r.status for r in rows] == ["send", "hit", "send", "error", "error"]
    assert rows[2].repeat_of == 0 and rows[0].repeat_of is None
    assert rows[1].hit.answer.startswith(offline.PREFIX)
    assert "ImageError" in rows[3].error and "'label' is missing" in rows[4].error
    body = json.loads(rows[0].request.payload)
    assert body["model"] == "visionkit-offline"
    assert body["messages"][-1]["content"][-1] == {"type": "text", "text": "Is it a cat?"}
    assert rows[0].request_bytes == len(rows[0].request.payload)
    assert rows[0].estimated_tokens == rows[0].request.estimated_tokens
    # one row at a time, and a subset by position, decide the same
    with make_plan(frame, "Is it a {label}?", AskOptions(client=client, cache=False)) as plan:
        assert prepare_row(plan, 0).key == rows[0].key
        assert [r.pos for r in plan_rows(plan, [4, 0])] == [4, 0]
    assert server.server.stats.chat_requests == 1  # planning sends nothing
