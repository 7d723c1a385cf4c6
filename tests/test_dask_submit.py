"""ddf.vision.submit on a 2-worker LocalCluster against the offline stand-in's Batch API: the
workers write the files, one process uploads them at the pace, the job is a pandas BatchJob."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask_helpers import image_folder
from distributed import get_task_stream
from distributed.diagnostics.plugin import SchedulerPlugin
from PIL import Image

import visionkit as vk
import visionkit.dask  # registers ddf.vision
from visionkit import offline

PROMPT = "Describe this image."


@pytest.fixture
def server():
    with offline.OfflineServer(upload_interval=0) as srv:
        yield srv


def _connect(server: offline.OfflineServer) -> vk.Client:
    return vk.connect("offline", base_url=server.base_url)


def _submit(ddf, client, cache: Path, **kw):
    kw.setdefault("upload_interval", 0)
    kw.setdefault("progress", False)
    return ddf.vision.submit(PROMPT, client=client, cache=cache, **kw)


def test_submit_gives_what_the_pandas_submit_gives(tmp_path, dask_client, server):
    folder = image_folder(tmp_path / "imgs", 12)
    ddf = vk.dask.read_images(folder, partition_size=4)
    client = _connect(server)
    cache = tmp_path / "cache" / "answers.sqlite"
    with get_task_stream() as stream:
        job = _submit(ddf, client, cache)
    assert isinstance(job, vk.BatchJob)
    # the files were written by the prepare tasks, on both workers; the three partitions'
    # files fit in one, so one file went up, as from pandas
    writers = {t["worker"] for t in stream.data if "prepare_partition" in str(t["key"])}
    assert len(writers) == 2
    assert len(job.batches) == 1 and server.stats.uploads == 1
    result = job.wait(progress=False).result()
    assert server.stats.batch_lines_answered == 12 and server.stats.paid_twice == {}
    pandas_job = vk.read_images(folder).vision.submit(
        PROMPT,
        client=client,
        cache=tmp_path / "other" / "answers.sqlite",
        upload_interval=0,
        progress=False,
    )
    want = pandas_job.wait(progress=False).result()
    assert pandas_job.id == job.id  # the same frame and arguments name the same job
    assert len(pandas_job.batches) == 1
    assert list(result.columns) == list(want.columns)
    assert result.index.tolist() == want.index.tolist() == ddf.index.compute().tolist()
    assert result["answer"].tolist() == want["answer"].tolist()
    assert result["answer"].str.startswith(offline.PREFIX).all()
    assert result["error"].isna().all()
    assert result["prompt_tokens"].tolist() == want["prompt_tokens"].tolist()
    # the job is an ordinary batch job: loaded again from the manifest beside the cache
    again = vk.BatchJob.load(job.id, client, cache=cache).result()
    pd.testing.assert_frame_equal(again, result)


def test_uploads_go_one_per_interval_through_one_uploader(tmp_path, dask_client):
    folder = image_folder(tmp_path / "imgs", 8)
    ddf = vk.dask.read_images(folder, partition_size=4)
    # the stand-in refuses (429) any upload within 0.3 s of the one before
    with offline.OfflineServer(upload_interval=0.3) as strict:
        client = _connect(strict)
        job = _submit(
            ddf, client, tmp_path / "a.sqlite", upload_interval=0.3, max_requests_per_file=2
        )
        assert strict.stats.uploads == len(job.batches) == 4
        assert strict.stats.uploads_refused == 0  # paced: none came too early
        created = [strict.batch(b) for b in job.batches["batch_id"]]
        assert [b.input_file_id for b in created] == job.batches["file_id"].tolist()
        # not paced (an interval of 0 asked for): the stand-in refuses some, and the uploader
        # waits as its Retry-After says, so every file still goes, once
        fast = _submit(
            ddf, client, tmp_path / "b.sqlite", upload_interval=0, max_requests_per_file=2
        )
        assert strict.stats.uploads_refused > 0
        assert strict.stats.uploads == 8 and len(fast.batches) == 4


def test_submitting_again_continues_the_job_and_sends_nothing_twice(tmp_path, dask_client, server):
    folder = image_folder(tmp_path / "imgs", 10)
    ddf = vk.dask.read_images(folder, partition_size=5)
    client = _connect(server)
    cache = tmp_path / "answers.sqlite"
    server.inject_batch(expire_fraction=0.5)  # the first batch leaves half its lines unrun
    server.pause_batches()
    job = _submit(ddf, client, cache)
    # while the batches are running, the same call continues the same job: nothing new goes
    same = _submit(ddf, client, cache)
    assert same.id == job.id and server.stats.uploads == 1 and server.stats.batches_created == 1
    server.resume_batches()
    first = job.wait(progress=False, resubmit=False).result()  # (submit sends them)
    unanswered = int(first["error"].notna().sum())
    assert 0 < unanswered < 10 and job.status == "incomplete"
    lines = server.stats.batch_lines
    again = _submit(ddf, client, cache).wait(progress=False)
    assert again.id == job.id
    assert server.stats.batch_lines - lines == unanswered  # only the rows without an answer
    result = again.result()
    assert result["error"].isna().all() and again.status == "completed"
    assert server.stats.batch_lines_answered == 10 and server.stats.paid_twice == {}
    # everything answered: one more time, every row is a cache hit and nothing is uploaded
    uploads = server.stats.uploads
    last = _submit(ddf, client, cache).result()
    assert server.stats.uploads == uploads and last["cached"].all()


def test_a_bad_row_is_that_rows_error_and_the_rest_are_sent(tmp_path, dask_client, server):
    folder = image_folder(tmp_path / "imgs", 6)
    df = pd.DataFrame({"path": sorted(str(p) for p in folder.iterdir())})
    df.loc[4, "path"] = str(tmp_path / "missing.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    df.loc[1, "path"] = str(tmp_path / "broken.jpg")
    ddf = dd.from_pandas(df, npartitions=2)
    job = _submit(ddf, _connect(server), tmp_path / "c.sqlite").wait(progress=False)
    result = job.result()
    assert result["error"].notna().tolist() == [False, True, False, False, True, False]
    assert result.loc[4, "error"].startswith("ImageError")
    assert result.loc[1, "error"].startswith("ImageError")
    assert server.stats.batch_lines == 4
    assert result["answer"].notna().sum() == 4


def test_dry_run_is_the_pandas_dry_run(tmp_path, dask_client, server):
    folder = image_folder(tmp_path / "imgs", 12)
    ddf = vk.dask.read_images(folder, partition_size=4)
    cache = tmp_path / "answers.sqlite"
    for per_file, files in ((2, 6), (None, 1)):  # full files; the partitions' files joined
        options = dict(dry_run=True, cache=cache, max_requests_per_file=per_file, progress=False)
        got = ddf.vision.submit(PROMPT, **options)
        want = vk.read_images(folder).vision.submit(PROMPT, **options)
        pd.testing.assert_frame_equal(got, want)
        assert got.attrs["usage"] == want.attrs["usage"]
        pd.testing.assert_frame_equal(got.attrs["files"], want.attrs["files"])
        assert got.attrs["usage"]["files"] == files
    assert server.stats.requests == 0


def test_an_image_in_two_partitions_is_sent_once(tmp_path, dask_client, server):
    # 12 files, 4 distinct images: every partition of 3 repeats the others' images
    folder = image_folder(tmp_path / "imgs", 12, repeat_every=4)
    ddf = vk.dask.read_images(folder, partition_size=3)
    client = _connect(server)
    dry = ddf.vision.submit(PROMPT, client=client, cache=False, dry_run=True, progress=False)
    assert dry.attrs["usage"]["requests"] == 4 and dry.attrs["usage"]["repeats"] == 8
    job = _submit(ddf, client, tmp_path / "c.sqlite").wait(progress=False)
    assert server.stats.batch_lines == 4
    result = job.result()
    assert result["error"].isna().all()
    assert result.groupby(result.index % 4)["answer"].nunique().eq(1).all()
    assert sum(job.batches["lines"]) == 4


def test_over_budget_nothing_is_uploaded_and_no_file_is_left(tmp_path, dask_client, server):
    ddf = vk.dask.read_images(image_folder(tmp_path / "imgs", 6), partition_size=3)
    cache = tmp_path / "cache" / "answers.sqlite"
    with pytest.raises(vk.BudgetExceeded, match="nothing was uploaded"):
        _submit(ddf, _connect(server), cache, budget_tokens=10)
    assert server.stats.uploads == 0
    assert not list((cache.parent / "batch-files").rglob("*.jsonl"))
    job = _submit(ddf, _connect(server), cache)  # the same call within budget goes
    assert len(job.batches) == 1 and server.stats.uploads == 1


def test_a_worker_dying_mid_prepare_is_retried_and_leaves_no_file(tmp_path, dask_client):
    """Dask runs the dead worker's partition again elsewhere; its half-written file is never
    recorded or uploaded, and is gone with the staging folder."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):  # big noisy photos: each partition takes a while to encode
        path = tmp_path / f"big{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    ddf = dd.from_pandas(pd.DataFrame({"path": paths}), npartitions=4)
    cache = tmp_path / "cache" / "answers.sqlite"
    with offline.OfflineServer(upload_interval=0) as srv:
        client = vk.connect("offline", base_url=srv.base_url)
        done: dict[str, object] = {}

        def submit() -> None:
            try:
                done["job"] = ddf.vision.submit(
                    PROMPT, client=client, cache=cache, upload_interval=0, progress=False
                )
            except BaseException as exc:  # re-raised below, in the test's thread
                done["error"] = exc

        thread = threading.Thread(target=submit)
        thread.start()
        deadline = time.monotonic() + 60
        busy: list[str] = []
        while time.monotonic() < deadline and not busy:
            busy = [
                worker
                for worker, keys in dask_client.processing().items()
                if any("prepare_partition" in str(k) for k in keys)
            ]
            time.sleep(0.01)
        victim = busy[0]
        pid = dask_client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)  # the worker dies while it encodes and writes
        thread.join(120)
        if "error" in done:
            raise done["error"]
        job = done["job"]
        result = job.wait(progress=False).result()
        assert result["error"].isna().all() and len(result) == 8
        assert srv.stats.batch_lines == 8 and srv.stats.paid_twice == {}
        assert victim not in dask_client.scheduler_info()["workers"]
    assert not list((cache.parent / "batch-files").rglob("*.jsonl"))  # no file left behind


class _GraphSpy(SchedulerPlugin):
    """Keeps every task the scheduler is given, pickled, to look for the key in."""

    name = "visionkit-test-graph-spy"

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def update_graph(self, scheduler, *, tasks, **kwargs) -> None:
        specs = [scheduler.tasks[k].run_spec for k in tasks if k in scheduler.tasks]
        self.seen.append(pickle.dumps(specs, protocol=5))


def test_the_key_is_in_no_graph_and_no_log(tmp_path, dask_client):
    secret = "sk-visionkit-test-secret-batch-0815"
    ddf = vk.dask.read_images(image_folder(tmp_path / "imgs", 6), partition_size=3)
    dask_client.register_plugin(_GraphSpy())
    with offline.OfflineServer(upload_interval=0, api_key=secret) as srv:
        client = vk.connect("offline", base_url=srv.base_url, api_key=secret)
        job = _submit(ddf, client, tmp_path / "c.sqlite").wait(progress=False)
        assert job.result()["error"].isna().all()  # this process had the key
    graphs = dask_client.run_on_scheduler(
        lambda dask_scheduler: b"".join(dask_scheduler.plugins[_GraphSpy.name].seen)
    )
    assert b"prepare_partition" in graphs  # the spy saw the submit's tasks
    assert secret.encode() not in graphs
    logs = str(dask_client.get_worker_logs()) + str(dask_client.get_scheduler_logs())
    assert secret not in logs and secret not in repr(job)


def test_replay_does_what_the_pandas_submit_does_and_sends_nothing(tmp_path, dask_client):
    folder = image_folder(tmp_path / "imgs", 4)
    store = tmp_path / "recorded"
    with offline.OfflineServer() as live:
        recorder = vk.connect("offline", base_url=live.base_url, record=store)
        recorded = vk.read_images(folder).vision.ask(
            PROMPT, client=recorder, cache=False, progress=False
        )

    def outcome(frame) -> object:
        player = vk.connect("offline", replay=store, strict=False)  # the server is gone
        try:
            job = frame.vision.submit(PROMPT, client=player, cache=tmp_path / "c.sqlite")
        except Exception as exc:  # whatever the pandas path does under replay
            return type(exc), str(exc)
        return job.result() if hasattr(job, "result") else job  # a job (replayed or not)

    want = outcome(vk.read_images(folder))
    got = outcome(vk.dask.read_images(folder, partition_size=2))
    assert isinstance(want, pd.DataFrame)  # pandas answers a replayed job from the recording
    pd.testing.assert_frame_equal(got, want)
    assert got["answer"].tolist() == recorded["answer"].tolist()


def test_submit_shows_df_vision_submits_parameters(tmp_path):
    import inspect

    ddf = vk.dask.read_images(image_folder(tmp_path / "imgs", 2), partition_size=1)
    params = inspect.signature(ddf.vision.submit).parameters
    pandas = inspect.signature(vk.read_images(tmp_path / "imgs").vision.submit).parameters
    assert list(params) == list(pandas)
    assert {"max_file_bytes", "upload_interval", "dry_run", "compact"} <= set(params)
