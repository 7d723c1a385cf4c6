"""What a batch job's files are cut and sent by: the provider profile's ``BatchLimits`` with the
call's overrides (``BatchSettings``), ``CONSERVATIVE`` limits where the server's are not known,
and the form the manifest keeps them in (``limits_json``: rows sent again later, by ``wait()``,
are cut the same way)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..providers import BatchLimits

__all__ = ["CONSERVATIVE", "BatchSettings", "limits_json"]


# A server whose Batch API limits are not known (a custom base_url): OpenAI's, which
# inference.net copies and other servers rarely exceed (the openai SDK's batches.create: "up to
# 50,000 requests ... up to 200 MB"). A batch refused for its size is split and sent again
# (visionkit.batch.resend), so a smaller server costs a round, never the job.
CONSERVATIVE = BatchLimits(
    max_file_bytes=200_000_000,
    max_requests_per_file=50_000,
    notes="no limits known for this server: OpenAI's Batch API limits",
)


@dataclass(frozen=True)
class BatchSettings:
    """What only a batch job decides (``AskOptions`` carries everything ``ask`` shares)."""

    max_file_bytes: int | None = None
    max_requests_per_file: int | None = None
    upload_interval: float | None = None
    metadata: Mapping[str, str] | None = None

    def limits(self, profile: BatchLimits | None) -> BatchLimits:
        """The profile's limits with this job's overrides: below a limit the provider
        documents, a smaller value always wins; where none is known (a custom ``base_url``),
        this job's value, else ``CONSERVATIVE``'s."""
        base = profile or BatchLimits()
        changes: dict[str, Any] = {}
        for name in ("max_file_bytes", "max_requests_per_file"):
            mine, theirs = getattr(self, name), getattr(base, name)
            if mine is not None and mine < 1:
                raise ValueError(f"{name} must be >= 1, not {mine!r}")
            if theirs is None:
                changes[name] = mine if mine is not None else getattr(CONSERVATIVE, name)
            elif mine is not None:
                changes[name] = min(mine, theirs)
        if self.upload_interval is not None:
            changes["upload_interval"] = float(self.upload_interval)
        return dataclasses.replace(base, **changes)


def limits_json(limits: BatchLimits) -> dict[str, Any]:
    """What a job's files are cut and sent by, as the manifest keeps it (``jobs.limits``)."""
    return {
        "max_file_bytes": limits.max_file_bytes,
        "max_requests_per_file": limits.max_requests_per_file,
        "upload_interval": limits.upload_interval,
        "completion_window": limits.completion_window,
        "endpoint": limits.endpoint,
    }
