"""The planner per row: look rows up a chunk at a time, then encode and check the misses.

``lookup_rows(plan, positions)`` reads (or recalls, ``visionkit.query.digests``) each row's
images, makes its cache key and looks the keys up in one query: each row comes back with an
``error``, a ``hit``, or as a miss (``RowPlan.missed``). ``prepare_request_for`` encodes a miss
and checks its body (reading the images first if the look-up did not keep them:
``load_images``). ``plan_rows`` does both for many rows in a thread pool, in order, with memory
bounded however many rows there are. ``visionkit.query.plan`` (where these are also imported
from) tells how the batch and Dask paths use them.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from ..errors import ImageError, RequestError
from ..images.pil_messages import holding
from ..types import default_workers
from .body import BodyMaker, PreparedRequest, prepare_request
from .cache import CachedAnswer
from .digests import Read, read_digests
from .messages import describe_error

if TYPE_CHECKING:
    import pandas as pd

    from ..providers import Provider
    from .cache import Cache
    from .schema import Schema

__all__ = [
    "Chunks",
    "ColumnCells",
    "RowPlan",
    "key_id",
    "load_images",
    "lookup_row",
    "lookup_rows",
    "plan_rows",
    "prepare_request_for",
    "prepare_row",
    "read_row",
]


def key_id(key: str) -> bytes | str:
    """What a set or dict of many keys holds for ``key``: 16 bytes of a sha256 hex key (a
    million keys in ~70 MB less than as 64-character strings; 128 bits never collide in
    practice), any other key as it is."""
    if len(key) == 64:
        try:
            return bytes.fromhex(key[:32])
        except ValueError:
            pass
    return key


class ColumnCells:
    """One image column's cells by row position, made Python objects a block of rows at a
    time as the planner reaches them: a column held whole as a list costs a Python string
    per row (~100 bytes a row for pandas' Arrow-backed strings), where the planner's threads
    only ever work on a few neighbouring chunks. Thread-safe."""

    BLOCK = 2048  # rows made Python objects at once
    KEPT = 3  # blocks kept (the planner's threads work a few chunks ahead of the caller)

    def __init__(self, values: Any) -> None:
        self._values = values  # a pandas array, sliced by position
        self._blocks: OrderedDict[int, list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, pos: int) -> Any:
        number, offset = divmod(pos, self.BLOCK)
        with self._lock:
            block = self._blocks.get(number)
            if block is None:
                start = number * self.BLOCK
                block = self._values[start : start + self.BLOCK].tolist()
                self._blocks[number] = block
                if len(self._blocks) > self.KEPT:
                    self._blocks.popitem(last=False)
            else:
                self._blocks.move_to_end(number)
        return block[offset]


class Plan(Protocol):
    """What planning a row needs of its call's plan (``visionkit.query.plan.Plan`` has it):
    the rows' labels, image cells and prompts, the cache and its keys, and the request's
    settings. A protocol, so this module need not import the planner that imports it."""

    index: pd.Index
    columns: list[str]
    cells: list[ColumnCells]
    prompts: list[str | RequestError]
    provider: Provider
    model: str | None
    schema: Schema | None
    cache: Cache | None

    @property
    def n(self) -> int: ...

    @property
    def system(self) -> str | None: ...

    @property
    def params(self) -> dict[str, Any]: ...

    @property
    def encode_options(self) -> dict[str, Any]: ...

    def key(self, pos: int, digests: Sequence[str], model: str | None = None) -> str: ...

    def lookup(self, key: str) -> CachedAnswer | None: ...

    def lookup_many(self, keys: Sequence[str]) -> dict[str, CachedAnswer]: ...

    def body_maker(self, model: str) -> BodyMaker: ...


P = TypeVar("P", bound=Plan)


def read_row(plan: Plan, pos: int) -> tuple[list[bytes], list[str]]:
    """The raw bytes of the row's images and their content digests (thread-pool work)."""
    label = plan.index[pos]
    items = [(cells[pos], label, col) for col, cells in zip(plan.columns, plan.cells, strict=True)]
    datas, digests = [], []
    for read in read_digests(items, None, keep_all=True):
        if isinstance(read, ImageError):
            raise read
        assert read.data is not None
        datas.append(read.data)
        digests.append(read.digest)
    return datas, digests


RowStatus = Literal["error", "hit", "send", "looked-up"]


@dataclass(slots=True)
class RowPlan:
    """What the planner decided for one row (see the module docstring)."""

    pos: int
    label: Hashable
    key: str | None = None
    hit: CachedAnswer | None = None
    request: PreparedRequest | None = None
    error: str | None = None
    estimated_tokens: int | None = None
    request_bytes: int | None = None
    repeat_of: int | None = None
    # ``ask``'s runs only: another process holds a live claim on ``key`` and is asking it now.
    busy: bool = False
    # The image bytes between the look-up and ``prepare_request_for``, then dropped. ``None``
    # after a look-up that did not need them (a file recalled by its digest, a large one):
    # ``load_images`` reads them when they are encoded.
    images: list[bytes] | None = field(default=None, repr=False)
    digests: list[str] = field(default_factory=list, repr=False)  # sha256 of each image

    @property
    def status(self) -> RowStatus:
        if self.error is not None:
            return "error"
        if self.hit is not None:
            return "hit"
        if self.request is not None:
            return "send"
        return "looked-up"

    @property
    def missed(self) -> bool:
        """Looked up and not known: neither an error nor a hit (encode it, send it)."""
        return self.error is None and self.hit is None


def lookup_rows(plan: Plan, positions: Sequence[int]) -> list[RowPlan]:
    """Read (or recall) the rows' images, make their keys, look them up: no encoding.

    Thread-pool work, for a chunk of rows at once: unchanged local files are recalled from the
    digest index instead of read (``visionkit.query.digests``), and the keys are looked up in
    one query. Each row has ``error`` or ``hit``, or else is a miss (``missed``), its image
    bytes kept in ``images`` when they were read and are small.
    """
    rows = [RowPlan(pos=pos, label=plan.index[pos]) for pos in positions]
    items = []
    for row in rows:
        prompt = plan.prompts[row.pos]
        if isinstance(prompt, RequestError):
            row.error = describe_error(prompt)
            continue
        for col, cells in zip(plan.columns, plan.cells, strict=True):
            items.append((cells[row.pos], row.label, col))
    reads = iter(read_digests(items, plan.cache))
    keyed = []
    for row in rows:
        if row.error is not None:
            continue
        found = [next(reads) for _ in plan.columns]
        failed = next((r for r in found if isinstance(r, ImageError)), None)
        if failed is not None:
            row.error = describe_error(failed)
            continue
        datas = [r.data for r in found if isinstance(r, Read)]
        row.digests = [r.digest for r in found if isinstance(r, Read)]
        row.images = datas if all(d is not None for d in datas) else None  # type: ignore[assignment]
        row.key = plan.key(row.pos, row.digests)
        keyed.append(row)
    known = plan.lookup_many([r.key for r in keyed if r.key is not None])
    for row in keyed:
        row.hit = known.get(row.key) if row.key is not None else None
        if row.hit is not None:
            row.estimated_tokens = row.hit.estimated_tokens
            row.images = None
    return rows


def lookup_row(plan: Plan, pos: int) -> RowPlan:
    """``lookup_rows`` for one row (thread-pool work)."""
    return lookup_rows(plan, [pos])[0]


def load_images(plan: Plan, row: RowPlan) -> list[bytes] | None:
    """A missed row's image bytes, read now if the look-up did not keep them.

    A file that changed since its look-up gets its new digest and key, and is looked up again:
    then ``row.hit`` may be set (returns ``None``), or ``row.error`` if it cannot be read.
    """
    if row.images is not None:
        return row.images
    try:
        datas, digests = read_row(plan, row.pos)
    except (ImageError, RequestError) as exc:
        row.error = describe_error(exc)
        return None
    if digests != row.digests:
        row.digests = digests
        row.key = plan.key(row.pos, digests)
        row.hit = plan.lookup(row.key)
        if row.hit is not None:
            row.estimated_tokens = row.hit.estimated_tokens
            return None
    row.images = datas
    return datas


def prepare_request_for(plan: Plan, row: RowPlan) -> RowPlan:
    """Encode a missed row's images and check its body: sets ``request`` or ``error`` (or
    ``hit``, if the file changed since its look-up and the new content is answered)."""
    if not row.missed or row.request is not None:
        return row
    if load_images(plan, row) is None:
        return row
    datas, row.images = row.images or [], None
    model = plan.model or "model"
    try:
        row.request = prepare_request(
            datas,
            provider=plan.provider,
            model=model,
            prompt=str(plan.prompts[row.pos]),
            encode_options=plan.encode_options,
            row=row.label,
            maker=plan.body_maker(model),  # the call's system, schema and options
        )
    except (ImageError, RequestError) as exc:
        row.error = describe_error(exc)
        return row
    row.estimated_tokens = row.request.estimated_tokens
    row.request_bytes = row.request.nbytes
    return row


def prepare_row(plan: Plan, pos: int) -> RowPlan:
    """``lookup_row`` then, on a miss, encode and check: the whole decision for one row."""
    return prepare_request_for(plan, lookup_row(plan, pos))


class Chunks:
    """Rows to look up together: as many as take about ``target`` seconds (at most ``most``),
    learnt from the chunks so far -- many tiny images per chunk (per-row overhead shared),
    one large photo at a time (memory bounded, progress shown as it goes)."""

    def __init__(self, *, first: int = 8, most: int = 256, target: float = 0.05) -> None:
        self.size = first
        self.most = most
        self.target = target

    def took(self, rows: int, seconds: float) -> None:
        """A chunk of ``rows`` took ``seconds`` (of one worker's time)."""
        per_row = seconds / max(rows, 1)
        self.size = max(1, min(self.most, int(self.target / max(per_row, 1e-6))))

    def take(self, todo: Iterator[int]) -> list[int]:
        return list(itertools.islice(todo, self.size))


def plan_rows(
    plan: P,
    positions: Iterable[int] | None = None,
    *,
    finish: Callable[[P, RowPlan], RowPlan] = prepare_request_for,
    workers: int | None = None,
    on_row: Callable[[RowPlan], None] | None = None,
) -> Iterator[RowPlan]:
    """Plan rows (all, or ``positions``) in order, in a thread pool; marks ``repeat_of``.

    Rows are looked up in chunks (``lookup_rows``); ``finish`` then runs in the pool on each
    missed row (default: encode and check; its images may not be read yet: see
    ``load_images``). At most ``2 * workers`` chunks are planned ahead of the one being
    yielded, and a chunk of large images is one row, so memory stays bounded however many
    rows there are. ``on_row`` is called (in the caller's thread) for each row as it is
    yielded, e.g. to move a progress bar.
    """
    workers = workers or default_workers(minimum=2)
    todo = iter(range(plan.n) if positions is None else positions)
    first: dict[bytes | str, int] = {}  # key_id -> the first row with that key
    chunks = Chunks()

    def work(chunk: list[int]) -> list[RowPlan]:
        start = time.perf_counter()
        rows = lookup_rows(plan, chunk)
        rows = [finish(plan, row) if row.missed else row for row in rows]
        chunks.took(len(rows), time.perf_counter() - start)
        return rows

    with (
        holding(),  # Pillow's message hooks installed once for the pass, not per decode
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionkit-plan") as pool,
    ):
        ahead: deque[Future[list[RowPlan]]] = deque()

        def submit() -> bool:
            chunk = chunks.take(todo)
            if chunk:
                ahead.append(pool.submit(work, chunk))
            return bool(chunk)

        while len(ahead) < 2 * workers and submit():
            pass
        while ahead:
            done = ahead.popleft().result()
            submit()
            for row in done:
                if row.key is not None and row.missed:
                    row.repeat_of = first.setdefault(key_id(row.key), row.pos)
                    if row.repeat_of == row.pos:
                        row.repeat_of = None
                if on_row is not None:
                    on_row(row)
                yield row
