"""``Job``: what ``submit`` returns, whether the job runs on a Batch API or is replayed.

``BatchJob`` (a job on the provider's Batch API, recorded in the manifest) and ``ReplayedJob``
(a job answered from a recording under ``connect(replay=...)``) both satisfy this protocol, so
``job: vk.Job = df.vision.submit(...)`` holds for either and ``isinstance(job, vk.Job)`` works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Job"]


@runtime_checkable
class Job(Protocol):
    """A submitted batch job: its state, a wait for it, and its result table."""

    @property
    def id(self) -> str:
        """The job's id: a hash of the ``submit`` call (the same call, the same job)."""
        ...

    @property
    def status(self) -> str:
        """``uploading``, ``in_progress``, ``completed`` or ``incomplete``."""
        ...

    @property
    def done(self) -> bool:
        """Every batch finished and was collected."""
        ...

    @property
    def batches(self) -> pd.DataFrame:
        """One row per input file: its batch, status and line counts."""
        ...

    def refresh(self) -> Job:
        """Ask the provider about the batches not collected yet; collect finished ones."""
        ...

    def cancel(self) -> Job:
        """Cancel the batches still running."""
        ...

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll: float = 0.5,
        max_poll: float = 60.0,
        progress: bool = True,
        resubmit: bool = True,
    ) -> Job:
        """Wait until every batch finished and was collected (or ``timeout`` seconds passed);
        ``resubmit``: send again, round after round, rows a batch left unanswered for a
        passing reason (expiry, a transient line failure)."""
        ...

    async def wait_async(
        self,
        timeout: float | None = None,
        *,
        poll: float = 0.5,
        max_poll: float = 60.0,
        progress: bool = True,
        resubmit: bool = True,
    ) -> Job:
        """``wait`` without blocking the event loop."""
        ...

    def result(self) -> pd.DataFrame:
        """``ask``'s table for the job's rows, on the submitted frame's index."""
        ...
