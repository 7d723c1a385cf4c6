"""Record answers once, replay them anywhere: notebooks with real answers in CI, without a key.

Recording (``vk.connect(..., record="answers/")`` or ``VISIONKIT_RECORD=answers/``): every
answer a run uses -- bought now, or found in the answer cache -- is also written to
``answers/answers.jsonl``, a small store meant to be committed next to the notebook. One JSON
object per line, sorted by key, so a re-recording shows in a diff as the answers that changed:

    {"key": "3f2a...", "provider": "inference.net", "base_url": "https://api.inference.net/v1",
     "model": "...", "prompt": "Describe this image.", "system": null,
     "images": ["sha256 of the image bytes"], "answer": "A red bicycle ...",
     "prompt_tokens": 1610, "completion_tokens": 12, "estimated_tokens": 1606, "attempts": 1,
     "checksum": "sha256 of the fields before it"}

It holds answers and usage, never the images (only their sha256) and never the API key. An
answer ``ask`` bought also keeps its measured ``"latency_s"``, and one a batch job delivered its
``"batch_id"`` (after ``attempts``), so a replayed evaluation reports the latencies, and a
replayed ``job.result()`` the batch ids, the recorded one did. Each line ends with its
``"checksum"`` (``visionkit.query.replay_lines``).

Integrity, the answer cache's way: a line that fails its checksum (a flipped byte, a hand
edit) or cannot be read is not used -- its request counts as never recorded -- and two
different lines for one request are neither used (no line wins by coming later). Lines
without a checksum (recorded by an older visionkit) are used as they are. Any of these is said
once per store, when it is opened, by a ``ReplayWarning`` naming the file, the lines and what
to do; recording into the store again rewrites it with the answers that run used and adds the
missing checksums.

Replaying (``vk.connect(..., replay="answers/")`` or ``VISIONKIT_REPLAY=answers/``): the
client answers every request from the store, under the provider identity it was recorded with
(provider name and base URL, so the cache keys match), sends nothing and needs no key. A
request that was never recorded is that row's error saying how to record it -- or, with
``strict=True`` (the default when the ``CI`` environment variable is set), ``ReplayError``
for the whole run, listing the rows. The local answer cache is neither read nor written.

What a result shows, so a recorded notebook and its replay print the same thing: the first
time a process uses an answer it is reported as bought -- ``cached`` False, its recorded
``attempts``, its tokens counted in ``attrs["usage"]`` (a replayed run's usage is what the live
run cost) -- even when, while recording, it came from the local cache; later uses of the same
answer in that process are cache hits. ``elapsed_s`` and the rate-limit counters describe the
transport and may differ.

For other paths (batch ``submit``, Dask): they go through the planner, whose ``Plan.lookup`` /
``Plan.save`` / ``Plan.used`` already consult this store (see ``visionkit.query.plan``); a path
must also not send anything when ``plan.replaying`` is true, and report rows
``plan.lookup`` cannot answer with ``not_recorded_message`` (or, strict, raise
``unrecorded_error``). Batch jobs: see ``visionkit.batch.replayed``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ReplayError, ReplayWarning, warn
from .cache import CachedAnswer
from .replay_lines import StoreLines, read_store, sealed

__all__ = [
    "FILENAME",
    "RECORD_ENV",
    "REPLAY_ENV",
    "Recording",
    "answer_record",
    "ci_default",
    "not_recorded_message",
    "unrecorded_error",
]

logger = logging.getLogger("visionkit")

RECORD_ENV = "VISIONKIT_RECORD"
REPLAY_ENV = "VISIONKIT_REPLAY"
FILENAME = "answers.jsonl"


def ci_default() -> bool:
    """Whether this looks like CI (the ``CI`` variable most CI services set)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def answer_record(
    key: str,
    entry: CachedAnswer,
    *,
    identity: tuple[str, str | None],
    prompt: str,
    system: str | None,
    images: Sequence[str],
    attempts: int = 1,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """One answer as the store keeps it (see ``Recording.add``)."""
    record: dict[str, Any] = {
        "key": key,
        "provider": identity[0],
        "base_url": identity[1],
        "model": entry.model,
        "prompt": prompt,
        "system": system,
        "images": list(images),
        "answer": entry.answer,
        "prompt_tokens": entry.prompt_tokens,
        "completion_tokens": entry.completion_tokens,
        "estimated_tokens": entry.estimated_tokens,
        "attempts": attempts,
    }
    if entry.latency_s is not None:
        record["latency_s"] = entry.latency_s
    if batch_id is not None:
        record["batch_id"] = batch_id
    return sealed(record)


@dataclass
class Recording:
    """One answer store (a directory) in ``record`` or ``replay`` mode; see the module doc."""

    path: Path
    mode: Literal["record", "replay"]
    strict: bool = False
    _lines: StoreLines | None = field(default=None, repr=False)
    _seen: set[str] = field(default_factory=set, repr=False)
    # the records this process wrote (they win over other lines for their key at ``close``)
    _written: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _dirty: bool = field(default=False, repr=False)
    _warned: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        if self.mode == "replay" and not self.file.exists():
            raise FileNotFoundError(
                f"nothing to replay: {self.file} does not exist. Record it first, where the "
                f"provider is reachable: {RECORD_ENV}={self.path}/ (or vk.connect(..., "
                f"record={str(self.path)!r}))"
            )

    @property
    def file(self) -> Path:
        return self.path / FILENAME

    @property
    def replaying(self) -> bool:
        return self.mode == "replay"

    # -- reading ------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        """The usable records (read on first use, under ``_lock``); the first read warns
        once about lines not used or not verified (``ReplayWarning``)."""
        if self._lines is None:
            lines = self._lines = read_store(self.file)
            if (lines.unsealed or lines.damaged) and self.mode == "record":
                self._dirty = True  # close() drops damaged lines, adds missing checksums
            if lines.troubled and not self._warned:
                self._warned = True
                for number in lines.damaged:
                    logger.warning(
                        "%s, line %d: failed its checksum or cannot be read", self.file, number
                    )
                warn(self._trouble(lines), ReplayWarning)
        return self._lines.records

    def check(self) -> None:
        """Read the store now (``connect`` does, so a ``ReplayWarning`` names the user's
        line)."""
        with self._lock:
            self._load()

    def _trouble(self, lines: StoreLines) -> str:
        """What the ``ReplayWarning`` says: each kind of trouble, and what to do."""
        said = []
        if lines.damaged:
            said.append(
                f"{_shown(lines.damaged)} failed {_plural(lines.damaged, 'its', 'their')} "
                "checksum or cannot be read (the file was changed or damaged) and "
                f"{_plural(lines.damaged, 'is', 'are')} not used"
            )
        for numbers in list(lines.conflicts.values())[:5]:
            said.append(f"{_shown(numbers)} hold different answers for one request: none is used")
        if len(lines.conflicts) > 5:
            said.append(f"and {len(lines.conflicts) - 5} more requests like it")
        if lines.unsealed:
            n = lines.unsealed
            said.append(
                f"{n} {_plural(n, 'answer has', 'answers have')} no checksum (recorded by an "
                f"older visionkit), so a change to {_plural(n, 'it', 'them')} cannot be "
                f"detected; {_plural(n, 'it replays', 'they replay')} as recorded"
            )
        return (
            f"the recording {self.file}: " + "; ".join(said) + ". Restore the file from version "
            f"control (git diff shows what changed), or record again where the provider is "
            f"reachable ({RECORD_ENV}={self.path}/ and a key): answers the store holds are "
            "taken from it, not bought again, and the store is rewritten without the damaged "
            "lines, with the answer that run gets in place of different lines for one "
            "request, and with a checksum on every line."
        )

    def rejected(self, key: str) -> str | None:
        """Why the store holds no usable line for ``key`` although it has some (or None)."""
        with self._lock:
            self._load()
            return self._lines.rejected.get(key) if self._lines is not None else None

    def has_unused_lines(self) -> bool:
        """Whether the store holds lines it does not use (damaged or conflicting)."""
        with self._lock:
            self._load()
            return self._lines is not None and bool(self._lines.damaged or self._lines.conflicts)

    def identities(self) -> list[tuple[str, str | None]]:
        """The (provider, base URL) pairs answers were recorded under."""
        with self._lock:
            found = {(r.get("provider"), r.get("base_url")) for r in self._load().values()}
        return sorted((str(p), b) for p, b in found)

    def models(self, provider: str) -> list[str]:
        with self._lock:
            return sorted(
                {str(r["model"]) for r in self._load().values() if r.get("provider") == provider}
            )

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            record = self._load().get(key)
        if record is None:
            return None
        return CachedAnswer(
            answer=record.get("answer"),
            prompt_tokens=record.get("prompt_tokens"),
            completion_tokens=record.get("completion_tokens"),
            estimated_tokens=record.get("estimated_tokens"),
            model=record.get("model"),
            provider=record.get("provider"),
            latency_s=_latency(record.get("latency_s")),
        )

    def attempts(self, key: str) -> int:
        with self._lock:
            record = self._load().get(key) or {}
        value = record.get("attempts")
        return value if isinstance(value, int) and value > 0 else 1

    def batch_id(self, key: str) -> str | None:
        """The batch that delivered ``key``'s answer when it was recorded, if a batch did."""
        with self._lock:
            value = (self._load().get(key) or {}).get("batch_id")
        return value if isinstance(value, str) else None

    def first_use(self, key: str) -> bool:
        """True the first time this process uses ``key``'s answer (report it as bought)."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True

    # -- writing (record mode) ----------------------------------------------------------------
    def add(
        self,
        key: str,
        entry: CachedAnswer,
        *,
        identity: tuple[str, str | None],
        prompt: str,
        system: str | None,
        images: Sequence[str],
        attempts: int = 1,
        batch_id: str | None = None,
    ) -> None:
        """Record ``entry`` (appended at once, so a crash keeps it; ``close`` sorts the file).
        ``batch_id``: the batch that delivered it (batch jobs)."""
        self.add_many(
            [
                answer_record(
                    key,
                    entry,
                    identity=identity,
                    prompt=prompt,
                    system=system,
                    images=images,
                    attempts=attempts,
                    batch_id=batch_id,
                )
            ]
        )

    def add_many(self, records: Iterable[dict[str, Any]]) -> None:
        """Record several answers (``answer_record``s) with one lock and one append: when this
        returns they are in the file, so a caller that acknowledges them only afterwards (a
        batch line marked collected) loses none in a crash."""
        records = list(records)
        if self.mode != "record" or not records:
            return
        with self._lock:
            stored = self._load()
            new = [r for r in records if stored.get(str(r["key"])) != r]
            if not new:
                return
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
            self.path.mkdir(parents=True, exist_ok=True)
            with _file_lock(self.path), self.file.open("a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
            for r in new:
                stored[str(r["key"])] = r
                self._written[str(r["key"])] = r
            self._dirty = True

    def has(self, key: str) -> bool:
        with self._lock:
            return key in self._load()

    def close(self) -> None:
        """Rewrite the store sorted by key, one record per line (atomically). A request this
        process recorded keeps the line it wrote; one with different lines it did not touch
        keeps them all (the conflict is for a person to settle); damaged lines are dropped;
        records without a checksum get one."""
        with self._lock:
            if not self._dirty:
                return
            with _file_lock(self.path):
                lines = read_store(self.file)  # re-read: another process may have appended
                fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".answers-", suffix=".jsonl")
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        for key in sorted(lines.candidates):
                            for record in _kept(lines.candidates[key], self._written.get(key)):
                                f.write(json.dumps(sealed(record), ensure_ascii=False) + "\n")
                    os.replace(tmp, self.file)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            self._lines = None  # read again when next used
            self._dirty = False

    def __reduce__(self) -> tuple[Any, ...]:
        # For Dask: a worker gets the store's place and mode, and reads it itself.
        return (Recording, (self.path, self.mode, self.strict))


@contextlib.contextmanager
def _file_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the store's folder itself (no lock file to commit by mistake), so
    several processes can record into one store: appends and the final sort never interleave."""
    try:
        import fcntl
    except ImportError:  # Windows: one recording process at a time
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _kept(lines: list[dict[str, Any]], mine: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The lines ``close`` keeps for one key: the one this process wrote when it is among
    them, else all of them (one, or a conflict left as it is)."""
    if mine is not None:
        for record in lines:
            if sealed(record) == mine:
                return [record]
    return lines


def _shown(numbers: Sequence[int]) -> str:
    """``"line 3"``, ``"lines 3, 9"``, ``"lines 1, ..., 10 and 4 more"``."""
    listed = ", ".join(map(str, numbers[:10]))
    more = f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    return f"{_plural(numbers, 'line', 'lines')} {listed}{more}"


def _plural(n: int | Sequence[Any], one: str, many: str) -> str:
    return one if (n if isinstance(n, int) else len(n)) == 1 else many


def _latency(value: Any) -> float | None:
    """A recorded latency, checked: a number of seconds >= 0, else unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        return None
    return float(value)


def not_recorded_message(recording: Recording, key: str | None = None) -> str:
    """A row's error when a replay has no answer for its request (``key``: to say why, when
    the store has a line for it that is not used)."""
    why = recording.rejected(key) if key is not None else None
    if why is not None:
        return (
            f"ReplayError: the recording {recording.file} holds this request, but {why}, so it "
            "is not used (see the ReplayWarning); restore the file or record it again "
            f"({RECORD_ENV}={recording.path}/ and a key)"
        )
    unused = (
        " or its line there is not used (see the ReplayWarning)"
        if recording.has_unused_lines()
        else ""
    )
    return (
        f"ReplayError: not recorded in {recording.path}/{unused} (replay sends nothing). Record it "
        f"where the provider is reachable: run with {RECORD_ENV}={recording.path}/ and a key, "
        "then commit the store"
    )


def unrecorded_error(recording: Recording, labels: Sequence[Any]) -> ReplayError:
    """What a strict replay raises when rows ``labels`` were never recorded (any path)."""
    shown = ", ".join(map(repr, labels[:5]))
    more = f" and {len(labels) - 5} more" if len(labels) > 5 else ""
    unused = (
        " (or its lines for them are not used: see the ReplayWarning)"
        if recording.has_unused_lines()
        else ""
    )
    return ReplayError(
        f"{len(labels)} request(s) of this run were never recorded in "
        f"{recording.path}/{unused} (rows {shown}{more}); a replay sends nothing. Record them "
        f"where the provider is reachable ({RECORD_ENV}={recording.path}/ and a key) "
        "and commit the store, or connect with strict=False to get these rows as "
        "errors instead."
    )
