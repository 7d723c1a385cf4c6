"""Batch jobs: inference.net's Batch API (OpenAI's shape) for large, cheap, unattended runs.

Usage:

    import visionkit as vk
    df = vk.read_images("photos/")
    job = df.vision.submit("Describe this image in one sentence.")   # plan, write, upload
    job.wait()                      # or: await job.wait_async(); Ctrl-C stops the wait only
    result = job.result()           # ask's table on df's index, plus batch_id
    vk.batch_jobs()                 # the jobs recorded beside the answer cache
    job = vk.BatchJob.load(job.id)  # after a kernel restart, or on another machine

Modules: ``submit`` (``df.vision.submit``), ``shared`` (what it shares with
``ddf.vision.submit``: the planning pass, the job id, the budget check and the upload step),
``limits`` (the files' limits: the profile's, the call's, conservative ones for an unknown
server), ``shards`` (the JSONL files, cut by bytes and lines), ``upload`` (paced uploads, batch
creation, never twice), ``claims`` (one process submits a job at a time), ``manifest`` (the
SQLite record of every job, row, file and batch; ``manifest_v1`` converts an older one),
``job`` (``BatchJob``: refresh, wait), ``lines`` (what a server sends, checked), ``collect``
(results into the answer cache), ``resend`` (rows a round left unanswered, sent again by the
wait), ``result`` (the result table), ``recorded`` and ``replayed`` (record and replay:
``ReplayedJob``, what ``submit`` returns under ``connect(replay=...)``), ``listing``
(``batch_jobs``), ``protocol`` (``Job``, the type ``BatchJob`` and ``ReplayedJob`` both
satisfy).
"""

from __future__ import annotations

from .job import BatchJob
from .listing import batch_jobs
from .protocol import Job
from .replayed import ReplayedJob
from .submit import submit

__all__ = ["BatchJob", "Job", "ReplayedJob", "batch_jobs", "submit"]
