"""Counters of what an OfflineServer saw: one ``RequestRecord`` per chat request, totals, and the
Batch API's uploads, batches and lines."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchCounters", "RequestRecord", "ServerStats"]


@dataclass(slots=True)
class RequestRecord:
    """One chat request as the server saw it (no headers, no key)."""

    request_id: str
    status: int
    digest: str
    body_bytes: int
    images: int
    image_bytes: int
    retry_count: int
    started: float
    elapsed: float
    fault: str | None = None


@dataclass
class BatchCounters:
    """What the Batch API's runner did; kept (and locked) by ``BatchService``, read through
    ``server.stats``."""

    batches_created: int = 0
    lines: int = 0  # lines run (answered or failed); lines left unrun are not counted
    lines_answered: int = 0  # lines answered with 200: what a provider bills
    lines_failed: int = 0  # lines run that got an error answer
    answered_bodies: Counter[str] = field(default_factory=Counter, repr=False)


@dataclass
class ServerStats:
    """Counters of what an OfflineServer saw; read them through ``server.stats``."""

    requests: int = 0  # every HTTP request, any path
    connections: int = 0  # TCP connections accepted (keep-alive clients reuse theirs)
    chat_requests: int = 0  # POST /v1/chat/completions
    status_counts: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    images: int = 0
    image_bytes: int = 0
    body_bytes: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # requests whose x-stainless-retry-count was above 0
    dropped: int = 0
    cpu_seconds: float = 0.0  # CPU time the handler threads spent on chat requests
    bodies: Counter[str] = field(default_factory=Counter, repr=False)
    records: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=100_000), repr=False)
    # The Batch API
    uploads: int = 0  # files accepted by POST /v1/files
    uploads_refused: int = 0  # uploads refused with 429 by the upload pacing
    upload_bytes: int = 0  # bytes of the files accepted
    upload_times: list[float] = field(default_factory=list, repr=False)  # time.time() of each
    batch: BatchCounters = field(default_factory=BatchCounters)  # the batch runner's own
    # SHA-256 of every body answered with 200 synchronously -> how often (the batch runner
    # counts its lines' in ``batch``): a body answered twice, either way, was paid twice.
    answered_bodies: Counter[str] = field(default_factory=Counter, repr=False)

    @property
    def batches_created(self) -> int:
        """Batches created through ``POST /v1/batches``."""
        return self.batch.batches_created

    @property
    def batch_lines(self) -> int:
        """Batch lines run (answered or failed); lines left unrun are not counted."""
        return self.batch.lines

    @property
    def batch_lines_answered(self) -> int:
        """Batch lines answered with 200: what a provider bills."""
        return self.batch.lines_answered

    @property
    def batch_lines_failed(self) -> int:
        """Batch lines answered with an error (not billed)."""
        return self.batch.lines_failed

    @property
    def answered(self) -> int:
        """Chat requests answered with 200."""
        return sum(1 for r in self.records if r.status == 200)

    @property
    def duplicates(self) -> dict[str, int]:
        """Bodies (by SHA-256) sent more than once -> how many times."""
        return {d: n for d, n in self.bodies.items() if n > 1}

    @property
    def paid_twice(self) -> dict[str, int]:
        """Bodies (by SHA-256) answered with 200 more than once, either way -> how many times."""
        both = self.answered_bodies + self.batch.answered_bodies
        return {d: n for d, n in both.items() if n > 1}

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (what a benchmark or a test prints)."""
        return {
            "requests": self.requests,
            "connections": self.connections,
            "chat_requests": self.chat_requests,
            "answered": self.answered,
            "status_counts": dict(self.status_counts),
            "max_in_flight": self.max_in_flight,
            "images": self.images,
            "image_bytes": self.image_bytes,
            "body_bytes": self.body_bytes,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retries": self.retries,
            "dropped": self.dropped,
            "cpu_ms_per_request": round(1000 * self.cpu_seconds / max(1, self.chat_requests), 3),
            "duplicate_bodies": sum(n - 1 for n in self.bodies.values() if n > 1),
            "answered_span_s": round(self.answered_span, 3),
            "refused_after_first_answer": self.refused_after_first_answer,
            "uploads": self.uploads,
            "uploads_refused": self.uploads_refused,
            "upload_bytes": self.upload_bytes,
            "batches_created": self.batches_created,
            "batch_lines": self.batch_lines,
            "batch_lines_answered": self.batch_lines_answered,
            "batch_lines_failed": self.batch_lines_failed,
            "paid_twice": sum(n - 1 for n in self.paid_twice.values()),
        }

    @property
    def refused_after_first_answer(self) -> int:
        """429s to requests that arrived after the first answer had gone out (a client that
        paces to limits the answers announce should see none)."""
        answered = [r.started + r.elapsed for r in self.records if r.status == 200]
        if not answered:
            return 0
        first = min(answered)
        return sum(1 for r in self.records if r.status == 429 and r.started >= first)

    @property
    def answered_span(self) -> float:
        """Seconds from the first to the last answered request's arrival (a rate over it is
        what a rate limiter saw: benchmarks/bench_ask.py measures pacing with it)."""
        starts = [r.started for r in self.records if r.status == 200]
        return max(starts) - min(starts) if len(starts) > 1 else 0.0
