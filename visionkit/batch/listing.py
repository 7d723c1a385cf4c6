"""``vk.batch_jobs()``: the batch jobs recorded beside an answer cache, as a DataFrame."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..query.cache import Cache
from .manifest import Manifest, manifest_path

__all__ = ["batch_jobs"]


def batch_jobs(cache: bool | str | Cache | Any = True) -> pd.DataFrame:
    """A DataFrame of the batch jobs recorded beside ``cache`` (default: the default cache)."""
    store = Cache.open(cache)
    if store is None:
        raise ValueError("batch jobs live beside an answer cache; pass cache=True or a path")
    path = manifest_path(store.path)
    columns = ["job_id", "created", "provider", "model", "prompt", "files", "lines", "status"]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    manifest = Manifest(path)
    try:
        records = []
        for job in manifest.jobs():
            shards = manifest.shards(job["job_id"])
            states = {s["state"] for s in shards}
            statuses = {s["status"] for s in shards if s["status"]}
            records.append(
                {
                    "job_id": job["job_id"],
                    "created": pd.Timestamp(job["created"], unit="s"),
                    "provider": job["provider"],
                    "model": job["model"],
                    "prompt": job["prompt"],
                    "files": len(shards),
                    "lines": sum(s["lines"] or 0 for s in shards),
                    "status": ", ".join(sorted(statuses)) or ", ".join(sorted(states)) or "-",
                }
            )
    finally:
        manifest.close()
    return pd.DataFrame(records, columns=columns)
