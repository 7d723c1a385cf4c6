"""ddf.vision.submit uploads a partition's files while the workers still prepare the others
(2-worker LocalCluster, the offline stand-in's Batch API): the first upload comes before the
last partition is done, every row is billed once, and an interrupt in the middle loses
nothing and pays nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import dask.dataframe as dd
import pandas as pd
from dask_helpers import gated_images
from distributed import get_task_stream

import visionkit as vk
import visionkit.dask
from visionkit import offline

PROMPT = "Describe this image."
ROWS = 16  # 4 partitions of 4 rows, 2 requests a file: each partition fills a file at once


def _frame(urls: list[str]) -> dd.DataFrame:
    return dd.from_pandas(pd.DataFrame({"path": urls}), npartitions=4)


def test_files_go_up_while_the_workers_still_prepare(tmp_path, dask_client):
    with (
        offline.OfflineServer(upload_interval=0) as srv,
        # the last row's image is served only once the stand-in has taken an upload: its
        # partition cannot finish before a file is up (or the gate gives up after 20 s)
        gated_images({ROWS - 1}, lambda: srv.stats.uploads >= 1) as images,
    ):
        ddf = _frame([images.url(i) for i in range(ROWS)])
        client = vk.connect("offline", base_url=srv.base_url)
        with get_task_stream() as stream:
            job = ddf.vision.submit(
                PROMPT,
                client=client,
                cache=tmp_path / "answers.sqlite",
                upload_interval=0,
                max_requests_per_file=2,
                progress=False,
            )
        assert images.held == 1 and images.timed_out == 0
        ends = [
            span["stop"]
            for task in stream.data
            if "prepare_partition" in str(task["key"])
            for span in task["startstops"]
            if span["action"] == "compute"
        ]
        assert len(ends) == 4
        assert min(srv.stats.upload_times) < max(ends)  # uploading overlapped preparing
        result = job.wait(progress=False).result()
        assert result["error"].isna().all() and len(result) == ROWS
        assert result.index.tolist() == list(range(ROWS))
        assert result["answer"].str.startswith(offline.PREFIX).all()
        assert srv.stats.batch_lines_answered == ROWS and srv.stats.paid_twice == {}
        assert int(job.batches["lines"].sum()) == ROWS
        assert srv.stats.uploads == len(job.batches) == ROWS // 2


_CHILD = textwrap.dedent(
    """
    import sys

    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client

    import visionkit as vk
    import visionkit.dask

    address, base_url, cache, *urls = sys.argv[1:]
    Client(address)
    ddf = dd.from_pandas(pd.DataFrame({"path": urls}), npartitions=4)
    ddf.vision.submit(
        "Describe this image.",
        client=vk.connect("offline", base_url=base_url),
        cache=cache,
        upload_interval=0,
        max_requests_per_file=2,
        progress=False,
    )
    print("finished")
    """
)


def test_an_interrupt_while_files_go_up_loses_nothing_and_pays_nothing_twice(tmp_path, dask_client):
    """Another process submits and is interrupted (Ctrl-C) once its first batches are made,
    while a partition is still being prepared; the same call here carries on: every row is
    answered, each billed once."""
    interrupted = threading.Event()
    cache = tmp_path / "answers.sqlite"
    with (
        offline.OfflineServer(upload_interval=0) as srv,
        gated_images({ROWS - 1}, interrupted.is_set) as images,
    ):
        urls = [images.url(i) for i in range(ROWS)]
        args = [dask_client.scheduler.address, srv.base_url, str(cache), *urls]
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        deadline = time.monotonic() + 120
        while srv.stats.batches_created < 1 and time.monotonic() < deadline:
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        assert srv.stats.batches_created >= 1
        assert images.held == images.timed_out == 0  # the last partition is still preparing
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        interrupted.set()
        assert "finished" not in out and "KeyboardInterrupt" in err
        made = srv.stats.batches_created
        assert 1 <= made < ROWS // 2  # some files were up, not all
        job = _frame(urls).vision.submit(
            PROMPT,
            client=vk.connect("offline", base_url=srv.base_url),
            cache=cache,
            upload_interval=0,
            max_requests_per_file=2,
            progress=False,
        )
        result = job.wait(progress=False).result()
        assert result["error"].isna().all() and len(result) == ROWS
        assert result["answer"].str.startswith(offline.PREFIX).all()
        assert srv.stats.batch_lines_answered == ROWS and srv.stats.paid_twice == {}
        assert srv.stats.batches_created == len(job.batches)  # the first call's ones included
