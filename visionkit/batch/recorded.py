"""A batch job's answers written to the client's recording (``vk.connect(record=...)``), as
``ask`` writes its own: what each key asked (from the manifest), how many of the job's batches
held it, the batch that delivered it -- a chunk at a time (one lock and one append)."""

from __future__ import annotations

import json
from typing import Any

from ..query.cache import CachedAnswer
from ..query.replay import Recording, answer_record
from ..redact import public_url
from .manifest import Manifest

__all__ = ["record_answers"]


def _identity(job: dict[str, Any]) -> tuple[str, str | None]:
    """The (provider, base URL) a job's cache keys were made under (see ``cache_identity``)."""
    if job.get("identity"):
        name, url = json.loads(job["identity"])
        return str(name), url
    name = str(job.get("provider"))  # a manifest from before identities were kept
    base_url = job.get("base_url")
    return (name, None) if name == "offline" else (name, public_url(base_url))


def record_answers(
    manifest: Manifest,
    job_id: str,
    recording: Recording | None,
    answers: dict[str, CachedAnswer],
    sent: dict[str, tuple[int, str | None]],
    *,
    only_new: bool,
    batch_id: str | None = None,
) -> None:
    """Write ``answers`` (job ``job_id``'s, by key) to ``recording`` (``None``: nothing);
    ``sent`` is ``manifest.submissions``; ``only_new``: skip keys it holds already. The caller
    sorts the store (``recording.close()``) when it is done."""
    if recording is None or not answers:
        return
    todo = {k: v for k, v in answers.items() if not (only_new and recording.has(k))}
    if not todo:
        return
    job = manifest.job(job_id) or {}
    identity = _identity(job)
    asked = manifest.requests(todo)
    records = []
    for key, entry in todo.items():
        prompt, system, images = asked.get(key, (job.get("prompt") or "", None, []))
        times, latest = sent.get(key, (1, None))
        records.append(
            answer_record(
                key,
                entry,
                identity=identity,
                prompt=prompt,
                system=system,
                images=images,
                attempts=max(1, times),
                batch_id=batch_id or latest,
            )
        )
        recording.first_use(key)
    recording.add_many(records)  # one lock and one append for the chunk
