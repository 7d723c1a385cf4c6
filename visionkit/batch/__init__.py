"""Batch jobs: inference.net's Batch API (OpenAI's shape) for large, cheap, unattended runs.

Usage::

    import visionkit as vk
    df = vk.read_images("photos/")
    job = df.vision.submit("Describe this image in one sentence.")   # plan, write, upload
    job.wait()                      # or: await job.wait_async(); Ctrl-C stops the wait only
    result = job.result()           # ask's table on df's index, plus batch_id
    vk.batch_jobs()                 # the jobs recorded beside the answer cache
    job = vk.BatchJob.load(job.id)  # after a kernel restart, or on another machine

Modules: ``submit`` (plan as ``ask`` does, write, check the budget, upload), ``shards`` (the
JSONL files, cut by bytes and lines), ``upload`` (paced uploads, batch creation), ``manifest``
(the SQLite record of every file and batch), ``job`` (``BatchJob``: refresh, wait, collect
results into the answer cache), ``result`` (the result table), ``replayed`` (record and replay:
``ReplayedJob``, what ``submit`` returns under ``connect(replay=...)``).
"""

from __future__ import annotations

from .job import BatchJob
from .listing import batch_jobs
from .replayed import ReplayedJob
from .submit import submit

__all__ = ["BatchJob", "ReplayedJob", "batch_jobs", "submit"]
