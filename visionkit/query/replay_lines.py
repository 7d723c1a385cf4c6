"""A recording's file line by line: each record's checksum, and what reading a store finds.

``answers.jsonl`` (``visionkit.query.replay``) holds one answer record per line, and each
record ends with ``"checksum"``: the sha256 of its other fields as canonical JSON (sorted keys,
no spaces), so a change to any of them -- the answer, its tokens, the model, the prompt, the
key it answers -- shows, wherever in the line it was made. (The answer cache keeps a checksum
per answer the same way, ``CachedAnswer.checksum``; a record holds more than a cache entry --
the request's prompt and images, its attempts and batch id -- and the checksum covers it all.)

``read_store`` sorts the lines of a store into:

- records, one per key: what a replay answers with;
- damaged lines: not a JSON object with a key, not UTF-8, or a checksum that does not match
  the fields. They are not used: their requests count as never recorded;
- unsealed records: no checksum (written before visionkit kept them). They are used as they
  are, unverified;
- conflicts: two lines (or more) for one key whose fields differ. **Neither is used**: a
  replay cannot tell which one is the answer the notebook showed, and the later line must not
  win by being later (an appended line is exactly what a tampered store looks like). Lines
  that differ only in having a checksum are one record.

A last line without its newline that does not parse is a record cut short by a crash while it
was written, not damage: it is left out quietly (its answer is still in the answer cache and
is recorded again when next used).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StoreLines", "content", "ordered", "read_store", "record_checksum", "sealed"]

# The fields written first, in this order, so each line starts with what it is sorted by.
_ORDER = (
    "key",
    "provider",
    "base_url",
    "model",
    "prompt",
    "system",
    "images",
    "answer",
    "prompt_tokens",
    "completion_tokens",
    "estimated_tokens",
    "attempts",
    "latency_s",
    "batch_id",
)


def content(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record's fields without its checksum (what the checksum covers)."""
    return {k: v for k, v in record.items() if k != "checksum"}


def record_checksum(record: Mapping[str, Any]) -> str:
    """sha256 over every field of ``record`` but ``checksum``, as canonical JSON."""
    text = json.dumps(content(record), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sealed(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` in its written order with its checksum last (computed now if it had none)."""
    out = ordered(content(record))
    out["checksum"] = record.get("checksum") or record_checksum(out)
    return out


def ordered(record: Mapping[str, Any]) -> dict[str, Any]:
    """The known fields in their written order, then any others (a newer visionkit's)."""
    out = {k: record[k] for k in _ORDER if k in record}
    out.update((k, v) for k, v in sorted(record.items()) if k not in out and k != "checksum")
    if "checksum" in record:
        out["checksum"] = record["checksum"]
    return out


@dataclass
class StoreLines:
    """What ``read_store`` found (see the module doc)."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # key -> every usable line for it, distinct, in file order (one, or a conflict)
    candidates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    damaged: list[int] = field(default_factory=list)  # line numbers
    unsealed: int = 0  # records used without a checksum
    conflicts: dict[str, list[int]] = field(default_factory=dict)  # key -> line numbers
    # key -> why its line(s) are not used, for that request's error
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def troubled(self) -> bool:
        return bool(self.damaged or self.unsealed or self.conflicts)


def read_store(path: Path) -> StoreLines:
    """Read ``path`` (a missing file is an empty store) and sort its lines (module doc)."""
    found = StoreLines()
    if not path.exists():
        return found
    numbers: dict[str, list[int]] = {}
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            record = _parse(raw)
            if record is None:
                if raw.endswith(b"\n"):
                    found.damaged.append(number)
                continue  # else: the last line, cut short by a crash while it was written
            key = str(record["key"])
            stored = record.get("checksum")
            if stored is not None and stored != record_checksum(record):
                found.damaged.append(number)
                found.rejected.setdefault(key, f"line {number} failed its checksum")
                continue
            same = found.candidates.setdefault(key, [])
            twin = next((i for i, c in enumerate(same) if content(c) == content(record)), None)
            if twin is None:
                same.append(record)
                numbers.setdefault(key, []).append(number)
            elif stored is not None and same[twin].get("checksum") is None:
                same[twin] = record  # the same record, now with its checksum
    for key, lines in found.candidates.items():
        if len(lines) == 1:
            found.records[key] = lines[0]
            found.rejected.pop(key, None)  # a good line besides a damaged one answers
            found.unsealed += lines[0].get("checksum") is None
        else:
            found.conflicts[key] = numbers[key]
            shown = ", ".join(map(str, numbers[key]))
            found.rejected[key] = f"lines {shown} hold different answers for it"
    return found


def _parse(raw: bytes) -> dict[str, Any] | None:
    """One line as a record (a JSON object with a ``key``), or None."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return None
    return record
