"""Several processes on one answer cache pay for each answer once (real processes, one server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.query.cache import Cache

ROOT = Path(__file__).resolve().parents[1]

# One process running an ask over a folder's images against ``url`` with cache ``cache``; it
# starts when the file ``go`` appears (so several start together) and writes its result.
WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import pandas as pd
    import visionkit as vk
    from visionkit.query.cache import Cache

    url, cache_path, folder, go, out, lease = sys.argv[1:]
    paths = sorted(str(p) for p in Path(folder).glob("*.png"))
    client = vk.connect("offline", base_url=url, api_key="offline")
    while not Path(go).exists():
        time.sleep(0.01)
    with Cache(cache_path, lease=float(lease)) as cache:
        result = pd.DataFrame({"path": paths}).vision.ask(
            "Describe.", client=client, cache=cache, concurrency=4, progress=False
        )
    Path(out).write_text(json.dumps({
        "usage": result.attrs["usage"],
        "errors": result["error"].dropna().tolist(),
        "answers": result["answer"].tolist(),
    }))
    """
)


def start_worker(tmp_path, url, cache, folder, name, lease=30.0):
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER,
            url,
            str(cache),
            str(folder),
            str(tmp_path / "go"),
            str(out),
            str(lease),
        ],
        env=env,
    )
    return proc, out


def test_three_processes_on_one_cache_pay_for_each_answer_once(tmp_path):
    folder = tmp_path / "imgs"
    make_images(folder, 24)
    cache = tmp_path / "shared.sqlite"
    Cache(cache).close()
    with offline.serve(latency=0.2) as url:
        workers = [start_worker(tmp_path, url, cache, folder, f"w{i}") for i in range(3)]
        time.sleep(1.0)  # let them import and connect, then start them together
        (tmp_path / "go").touch()
        for proc, _ in workers:
            assert proc.wait(120) == 0
        stats = url.server.stats
    results = [json.loads(out.read_text()) for _, out in workers]
    for r in results:
        assert r["errors"] == [] and len(r["answers"]) == 24
    assert results[0]["answers"] == results[1]["answers"] == results[2]["answers"]
    # every image was sent once, by one of the three, and the others took its answer
    assert stats.chat_requests == 24, stats.as_dict()
    assert stats.duplicates == {}
    assert sum(r["usage"]["answered"] for r in results) == 24
    # (how many rows a process found claimed by another -- usage["waited"] -- depends on how
    # the three happened to overlap on a loaded machine, so it is not asserted)
    assert all(r["usage"]["cache_hits"] + r["usage"]["answered"] == 24 for r in results)


def test_a_dead_owners_rows_are_taken_over_when_its_lease_runs_out(tmp_path):
    folder = tmp_path / "imgs"
    paths = make_images(folder, 8)
    cache = tmp_path / "shared.sqlite"
    Cache(cache).close()
    (tmp_path / "go").touch()
    with offline.serve(latency=30.0) as url:
        owner, _ = start_worker(tmp_path, url, cache, folder, "owner", lease=1.0)
        deadline = time.monotonic() + 60
        while url.server.stats.chat_requests < 4:  # its first requests are on the wire
            assert time.monotonic() < deadline and owner.poll() is None
            time.sleep(0.02)
        with Cache(cache) as c:
            held = c._run(lambda: c._db.execute("SELECT COUNT(*) FROM claims").fetchone()[0])
        assert held >= 4  # rows claimed by the owner (in flight or being prepared)
        owner.send_signal(signal.SIGKILL)  # dies holding claims: no release, no renewal
        owner.wait(30)
        url.server.latency = 0.05
        client = vk.connect("offline", base_url=url, api_key="offline")
        result = pd.DataFrame({"path": paths}).vision.ask(
            "Describe.", client=client, cache=cache, concurrency=4, progress=False
        )
        stats = url.server.stats
    assert result["error"].isna().all(), result["error"].dropna().tolist()
    usage = result.attrs["usage"]
    # Whether this run met the dead owner's claims still live (and waited out the lease) or
    # already expired depends on the machine's speed; either way it asks every row itself.
    assert usage["answered"] == 8
    # the dead owner's requests in flight are all that was paid twice
    assert stats.chat_requests == 8 + 4


@pytest.mark.parametrize("cache_on", [True, False])
def test_no_claims_are_left_behind(tmp_path, cache_on):
    frame = pd.DataFrame({"path": make_images(tmp_path / "i", 5)})
    path = tmp_path / "c.sqlite"
    with offline.serve() as url:
        url.server.inject(status=400, count=1)
        client = vk.connect("offline", base_url=url, api_key="offline")
        frame.vision.ask(
            "Describe.",
            client=client,
            cache=path if cache_on else False,
            progress=False,
            concurrency=1,
        )
    with Cache(path) as c:
        assert c._run(lambda: c._db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]) == 0
