"""The planner: everything decided before a request is sent, for a whole call and per row.

This is the seam every query path builds on -- ``ask``'s run, the dry run and the budget check
here, batch ``submit`` and the Dask path next -- so they all plan a row the same way: the same
template, checks, encoding and cache key, the same row errors.

For a call, ``make_plan(df, prompt, options)`` checks the arguments against the frame (raising
before anything is read or sent), fills the prompt template per row (an NA field is that row's
error), resolves client, provider and model, and opens the cache. A ``Plan`` is a context
manager: leaving it closes what it opened (the cache file, when the caller passed a path or
``True`` rather than a ``Cache`` of their own).

For a row, the planner answers one question -- what would be sent? -- as a ``RowPlan``:

- ``row.error``: the row cannot be sent (unreadable image, NA template field, a body the
  provider's rules refuse); the text is what the result's ``error`` column shows;
- ``row.hit``: the answer is already known (the cache; later also a replay store): send nothing;
- ``row.request``: a checked ``PreparedRequest`` (``payload`` is the exact JSON body, ``nbytes``
  its size, ``estimated_tokens`` its price), under ``row.key``;
- ``row.repeat_of``: set by ``plan_rows`` when an earlier row in the same call has the same key
  (the same image and prompt): send it once and give both rows its answer.

Internal API for the batch and Dask paths (``visionkit.query.plan``; not public, but kept
stable -- talk to the query owner before changing it):

    from visionkit.query.options import AskOptions
    from visionkit.query.plan import make_plan, plan_rows

    options = AskOptions(client=client, schema=schema, cache=cache, max_side=max_side,
                         request_options=request_options)
    with make_plan(df, prompt, options) as plan:   # raises on bad arguments, nothing read yet
        for row in plan_rows(plan):                # in row order, encoded in a thread pool,
            if row.error:                          # at most ~2 x workers rows in memory
                ...  # that row's error, never a line in the file
            elif row.hit:
                ...  # answered already: nothing to submit
            elif row.repeat_of is not None:
                ...  # the same request as row.repeat_of: share its answer
            else:
                line = {"custom_id": row.key, "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": json.loads(row.request.payload)}   # or splice the bytes
        # when results come back: plan.save(row, CachedAnswer(...)) commits each answer
        # exactly where ask's own answers go (the cache, and a recording when one is on);
        # for a row answered by row.hit, plan.used(row, row.hit) records it when recording.

Record/replay (``visionkit.query.replay``) is honoured through the same calls: ``lookup`` reads
the recording (only the recording, when replaying), ``save`` and ``used`` write to it. A path
must also send nothing when ``plan.replaying`` is true: there, a row ``plan_rows`` yields
without ``error`` or ``hit`` was never recorded -- report it with
``replay.not_recorded_message(plan.recording)``, or raise ``ReplayError`` when
``plan.recording.strict``.

``plan_rows(plan, positions)`` plans a subset (a Dask partition's rows, a retry of the rows
still unanswered); ``lookup_row`` / ``prepare_row`` do one row synchronously. ``plan.model``
is ``None`` only for ``connect(base_url=...)`` without ``model=`` before the run has asked the
server for its model (``run.discover_model``); the batch path must resolve it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import RequestError
from ..images.cells import find_image_column
from ..images.table_refs import tables_call
from ..providers import Provider, RateLimits
from .body import BodyMaker
from .cache import Cache, CachedAnswer, KeyMaker
from .client import Client, cache_identity, default_client, rate_limits, resolve_profile
from .options import AskOptions
from .replay import Recording, answer_record

# The planner per row lives in .rows; its names are the planner's API too (see above).
from .rows import (
    ColumnCells,
    RowPlan,
    load_images,
    lookup_row,
    lookup_rows,
    plan_rows,
    prepare_request_for,
    prepare_row,
    read_row,
)
from .schema import Schema, make_schema
from .template import check_template, fill_template

__all__ = [
    "RESULT_COLUMNS",
    "ColumnCells",
    "Plan",
    "RowPlan",
    "load_images",
    "lookup_row",
    "lookup_rows",
    "make_plan",
    "plan_rows",
    "prepare_request_for",
    "prepare_row",
    "read_row",
]


RESULT_COLUMNS = (
    "answer",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "estimated_tokens",
    "cached",
    "attempts",
)


@dataclass
class Plan:
    """One call, decided: the options, the rows' prompts and images, client, schema, cache."""

    options: AskOptions
    index: pd.Index
    columns: list[str]
    cells: list[ColumnCells]  # per image column, the cells by row position
    prompts: list[str | RequestError]
    client: Client | None
    provider: Provider
    model: str | None
    schema: Schema | None
    cache: Cache | None
    owns_cache: bool = False  # opened here (from True or a path): closed by close()
    # schema field -> its result column: the field's name, or ``answer_<field>`` when the
    # DataFrame already has a column of that name (so ``df.join(result)`` cannot clash)
    schema_columns: dict[str, str] = field(default_factory=dict)
    _keys: dict[str, KeyMaker] = field(default_factory=dict, repr=False)  # model -> its keys
    _bodies: dict[str, BodyMaker] = field(default_factory=dict, repr=False)  # model -> bodies
    # the call's hold on table files (references' Parquet files are closed when it ends)
    tables: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.tables = tables_call()
        self.tables.__enter__()

    @property
    def n(self) -> int:
        return len(self.index)

    @property
    def system(self) -> str | None:
        return self.options.system

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.options.request_options)

    @property
    def encode_options(self) -> dict[str, Any]:
        return self.options.encode_options

    @property
    def rate_limits(self) -> RateLimits | None:
        """The known limits to pace to: the client's, overridden by the call's options."""
        base = self.client.rate_limits if self.client is not None else None
        return rate_limits(
            self.provider,
            None,
            self.options.requests_per_minute,
            self.options.tokens_per_minute,
            base=base,
        )

    def key(self, pos: int, digests: Sequence[str], model: str | None = None) -> str:
        """The cache key of row ``pos`` with these image digests (see ``request_key``)."""
        name = model or self.model or ""
        maker = self._keys.get(name)
        if maker is None:
            if self.client is not None:
                provider, base_url = self.client.cache_identity
            else:
                provider, base_url = cache_identity(self.provider, self.provider.base_url)
            maker = self._keys[name] = KeyMaker(
                provider=provider,
                base_url=base_url,
                model=name,
                system=self.system,
                schema=self.schema.json_schema if self.schema else None,
                params={**self.params, "_encode": self.encode_options},
            )
        return maker(str(self.prompts[pos]), digests)

    def body_maker(self, model: str) -> BodyMaker:
        """The request bodies of this call for ``model`` (see ``body.BodyMaker``)."""
        maker = self._bodies.get(model)
        if maker is None:
            maker = self._bodies[model] = BodyMaker(
                model=model,
                system=self.system,
                response_format=self.schema.response_format if self.schema else None,
                params=self.params,
            )
        return maker

    @property
    def recording(self) -> Recording | None:
        """The client's record/replay store, if any (``visionkit.query.replay``)."""
        return self.client.recording if self.client is not None else None

    @property
    def replaying(self) -> bool:
        """Answers come from a recording only: nothing may be sent."""
        return self.recording is not None and self.recording.replaying

    def lookup(self, key: str) -> CachedAnswer | None:
        """The answer already known for ``key``, or ``None`` (send it).

        Replaying: the recording only. Recording: the recording, then the cache. Otherwise
        the cache.
        """
        recording = self.recording
        if recording is not None:
            found = recording.get(key)
            if found is not None or recording.replaying:
                return found
        if self.cache is None or self.model is None:
            return None
        return self.cache.get(key)

    def lookup_many(self, keys: Sequence[str]) -> dict[str, CachedAnswer]:
        """``lookup`` for several keys at once (one cache query per 500 keys): the keys known."""
        found: dict[str, CachedAnswer] = {}
        rest = list(keys)
        recording = self.recording
        if recording is not None:
            for key in keys:
                entry = recording.get(key)
                if entry is not None:
                    found[key] = entry
            if recording.replaying:
                return found
            rest = [k for k in keys if k not in found]
        if self.cache is None or self.model is None or not rest:
            return found
        found.update(self.cache.get_many(rest))
        return found

    def save(self, row: RowPlan, entry: CachedAnswer, *, attempts: int = 1) -> None:
        """Commit an answer that was paid for: the cache (raises if the cache cannot), and the
        recording when one is on. Counts as the row's first use (see ``used``)."""
        assert row.key is not None
        if self.cache is not None:
            self.cache.put(row.key, entry)
        if self.recording is not None:
            self._record(row, entry, attempts)
            self.recording.first_use(row.key)

    def used(self, row: RowPlan, entry: CachedAnswer) -> bool:
        """A row got ``entry`` without a request now (cache, recording, a twin). With a
        recording on, records it if new and returns True the first time this process uses
        it -- report it as bought then, so a recording and its replay show the same result."""
        return self.used_many([(row, entry)])[0]

    def used_many(self, pairs: Sequence[tuple[RowPlan, CachedAnswer]]) -> list[bool]:
        """``used`` for several rows at once: what is new is recorded with one lock and one
        append (a cached re-run of many rows while recording)."""
        recording = self.recording
        if recording is None:
            return [False] * len(pairs)
        if not recording.replaying:
            recording.add_many(
                [
                    self._answer_record(row, entry, 1)
                    for row, entry in pairs
                    if row.key is not None and not recording.has(row.key)
                ]
            )
        return [row.key is not None and recording.first_use(row.key) for row, _ in pairs]

    def _record(self, row: RowPlan, entry: CachedAnswer, attempts: int) -> None:
        assert self.recording is not None
        self.recording.add_many([self._answer_record(row, entry, attempts)])

    def _answer_record(self, row: RowPlan, entry: CachedAnswer, attempts: int) -> dict[str, Any]:
        assert row.key is not None
        if self.client is not None:
            identity = self.client.cache_identity
        else:
            identity = cache_identity(self.provider, self.provider.base_url)
        return answer_record(
            row.key,
            entry,
            identity=identity,
            prompt=str(self.prompts[row.pos]),
            system=self.system,
            images=row.digests,
            attempts=attempts,
        )

    def close(self) -> None:
        """Close what this plan opened (the cache file, unless the caller passed a Cache), and
        sort a recording's store."""
        if self.owns_cache and self.cache is not None:
            self.cache.close()
        if self.recording is not None:
            self.recording.close()
        if self.tables is not None:  # once, however often close() is called
            self.tables.__exit__(None, None, None)
            self.tables = None

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _image_columns(df: pd.DataFrame, column: str | Sequence[str] | None) -> list[str]:
    if column is None:
        return [find_image_column(df, who="ask")]
    cols = [column] if isinstance(column, str) else list(column)
    if not cols:
        raise ValueError("image_column= is an empty list; name at least one image column")
    return [find_image_column(df, c, who="ask") for c in cols]


def _fill_prompts(df: pd.DataFrame, prompt: str, fields: list[str]) -> list[str | RequestError]:
    if not fields:
        return [prompt.format_map({})] * len(df)
    prompts: list[str | RequestError] = []
    records = df[fields].to_dict("records")
    for label, values in zip(df.index, records, strict=True):
        try:
            prompts.append(fill_template(prompt, values, row=label))
        except RequestError as exc:
            prompts.append(exc)
    return prompts


def _schema_columns(schema: Schema, columns: pd.Index) -> dict[str, str]:
    """Each schema field's result column: its own name, or ``answer_<name>`` when ``df``
    already has that column (``width`` from ``read_images``), so that the documented
    ``df.drop(columns="error").join(result)`` works with any schema."""
    clash = [f for f in schema.fields if f in RESULT_COLUMNS]
    if clash:
        raise ValueError(
            f"schema field(s) {clash} would collide with ask's result columns "
            f"{list(RESULT_COLUMNS)}; rename them in the schema"
        )
    existing = set(map(str, columns))
    out = {f: f"answer_{f}" if f in existing else f for f in schema.fields}
    taken = [c for f, c in out.items() if c != f and (c in existing or c in schema.fields)]
    if taken:
        raise ValueError(
            f"schema field(s) {[c[7:] for c in taken]} are columns of the DataFrame and so "
            f"would come back as {taken}, but those names are taken too; rename the fields"
        )
    return out


def make_plan(
    df: pd.DataFrame, prompt: str, options: AskOptions, *, connect_now: bool = True
) -> Plan:
    """Check a call against ``df`` and decide everything that does not need a row's image.

    ``connect_now=False`` (dry runs) resolves the provider without connecting when no client
    was given. Raises before anything is read or sent.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"ask needs a DataFrame, not {type(df).__name__}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string, e.g. 'Describe this image.'")
    columns = _image_columns(df, options.image_column)
    fields = check_template(prompt, df.columns)
    schema = make_schema(options.schema)
    schema_columns = {} if schema is None else _schema_columns(schema, df.columns)
    prompts = _fill_prompts(df, prompt, fields)

    client = options.client
    if isinstance(client, str):
        from .client import connect

        client = connect(client)
    if client is None and connect_now:
        client = default_client()
    if client is not None:
        client = client.with_model(options.model)
        provider, model = client.provider, client.model
    else:
        provider = resolve_profile("auto")
        model = options.model or provider.default_model
    if provider.max_images is not None and len(columns) > provider.max_images:
        raise RequestError(
            f"image_column={columns} puts {len(columns)} images in each request, but "
            f"{provider.name} allows at most {provider.max_images}; nothing was sent"
        )
    replaying = client is not None and client.recording is not None and client.recording.replaying
    # A replay answers from its recording only: the local cache is neither read nor written.
    cache = None if replaying else Cache.open(options.cache)
    return Plan(
        options=options,
        index=df.index,
        columns=columns,
        cells=[ColumnCells(df[c].array) for c in columns],
        prompts=prompts,
        client=client,
        provider=provider,
        model=model,
        schema=schema,
        cache=cache,
        owns_cache=cache is not None and cache is not options.cache,
        schema_columns=schema_columns,
    )
