"""``AskOptions``: the settings of one query run, carried as one object down to the planner.

The public entry points (``ask``, ``ask_async``, ``df.vision.ask``) keep explicit keyword
parameters, so IDEs and Jupyter's Shift+Tab show every option with its default. Each of them
turns its arguments into one ``AskOptions`` (``AskOptions.from_arguments(locals())``: every
field is picked up by its own name, nothing is copied by hand), and from there a run's settings
travel as this one frozen object -- ``make_plan(df, prompt, options)``, ``plan.options.timeout``
-- so a parameter keeps its name all the way down. Arguments are checked when the object is
made, so a bad value raises before anything is read or sent.

The parameter docs are written once, as each field's ``doc`` metadata, and
``parameters_doc()`` renders them into the entry points' docstrings.
``tests/test_ask_options.py`` checks that each entry point's signature has exactly these
fields, with the same defaults, so the two cannot drift apart.

For other entry points (batch ``submit``, the Dask path):

    options = AskOptions(client=client, schema=Facts, cache=True, max_side=840)
    with make_plan(df, prompt, options) as plan:        # visionkit.query.plan
        for row in plan_rows(plan):                     # cache key, hit, request or error
            ...

Fields a path does not use (``concurrency`` for a batch file) keep their defaults; settings
only one path has (a batch's ``max_file_bytes``) belong in that path's own options object,
next to an ``AskOptions``, not in here.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import Cache
    from .client import Client

__all__ = ["AskOptions", "check_signature", "parameters_doc"]

RESERVED_REQUEST_OPTIONS = ("model", "messages", "stream")


def _doc(text: str) -> dict[str, str]:
    """A field's metadata: its parameter doc, written once."""
    return {"doc": text}


@dataclass(frozen=True)
class AskOptions:
    """Everything a caller decides about a query run except the DataFrame and the prompt."""

    client: Client | str | None = field(
        default=None,
        metadata=_doc(
            "from ``vk.connect(...)``, or a provider name; default ``vk.connect()``: inference.net "
            "when ``INFERENCE_API_KEY`` is set, else the offline stand-in."
        ),
    )
    model: str | None = field(default=None, metadata=_doc("overrides the client's model."))
    image_column: str | Sequence[str] | None = field(
        default=None,
        metadata=_doc(
            "the image column (default ``image``, else ``path``), or a list of columns for "
            "several images per request (at most the provider's ``max_images``)."
        ),
    )
    system: str | None = field(default=None, metadata=_doc("a system prompt."))
    schema: Any = field(
        default=None,
        metadata=_doc(
            "a pydantic model class or a JSON-schema dict for structured output; its fields "
            "become columns, and a reply that does not validate is that row's ``error`` with the "
            "raw text kept in ``answer``."
        ),
    )
    concurrency: int = field(
        default=8, metadata=_doc("requests in flight at most (lowered automatically on 429s).")
    )
    max_retries: int = field(
        default=6,
        metadata=_doc("retries per row for 429, 5xx, timeouts and dropped connections (0: none)."),
    )
    timeout: float | None = field(default=60, metadata=_doc("seconds per request."))
    cache: bool | str | os.PathLike[str] | Cache | None = field(
        default=True,
        metadata=_doc(
            "``True`` (the default file), ``False``/``None`` (off), a path, or a "
            "``visionkit.Cache``."
        ),
    )
    dry_run: bool = field(
        default=False,
        metadata=_doc(
            "no network, no key: per-row ``estimated_tokens``, ``request_bytes``, ``cached`` and "
            '``error``, totals in ``attrs["usage"]``.'
        ),
    )
    budget_tokens: int | None = field(
        default=None,
        metadata=_doc(
            "refuse to start (``BudgetExceeded``) if the estimate is above it -- exactly the total "
            '``dry_run=True`` reports in ``attrs["usage"]["estimated_tokens"]``: the rows that '
            "would be sent, priced as encoded; cache hits, repeats of an image already in the run "
            "and rows that would fail cost nothing."
        ),
    )
    progress: bool = field(
        default=True, metadata=_doc("a ``tqdm.auto`` bar with cache hits, failures and tokens.")
    )
    requests_per_minute: float | None = field(
        default=None,
        metadata=_doc(
            "a known limit to pace sends to from the first request, spaced evenly just under "
            'it (default: the client\'s, from ``vk.connect(..., tier="paid")`` or its own '
            "``requests_per_minute=``; without one, sends slow down only after a 429)."
        ),
    )
    tokens_per_minute: float | None = field(
        default=None,
        metadata=_doc(
            "the same for tokens: each request books its estimated prompt tokens (plus "
            "``max_tokens`` if set), corrected by the usage the provider reports."
        ),
    )
    max_side: int | None = field(
        default=None,
        metadata=_doc("downscale images so their longest side is at most this (fewer tokens)."),
    )
    request_options: Mapping[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "extra fields of the chat-completions body (``temperature=0``, ``max_tokens=200``, or "
            "a server's own such as ``top_k``), sent as given."
        ),
    )

    def __post_init__(self) -> None:
        c, r = self.concurrency, self.max_retries
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"concurrency must be an integer >= 1, but {c!r} was passed")
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"max_retries must be an integer >= 0 (0 disables retries), not {r!r}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            ):
                raise ValueError(f"{name} must be a number > 0 or None, not {value!r}")
        for reserved in RESERVED_REQUEST_OPTIONS:
            if reserved in self.request_options:
                hint = "pass model=..." if reserved == "model" else "it is built from the row"
                raise TypeError(f"ask() does not take {reserved}= as a request option ({hint})")
        if self.schema is not None and "response_format" in self.request_options:
            raise TypeError("pass either schema= or response_format=, not both")
        object.__setattr__(self, "request_options", dict(self.request_options))

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> AskOptions:
        """The options among ``arguments`` (an entry point's ``locals()``), by field name."""
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls)})

    def replace(self, **changes: Any) -> AskOptions:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    @property
    def encode_options(self) -> dict[str, Any]:
        """What ``encode_image`` is told beyond the provider's defaults (part of the key)."""
        return {"max_side": self.max_side} if self.max_side is not None else {}


def parameters_doc(*, indent: int = 4) -> str:
    """The ``**Parameters**`` section of the entry points' docstrings, from the field docs."""
    lines = ["**Parameters**", ""]
    lines.append(
        '- ``prompt``: text, or a template filled from each row (``"Is this a {label}?"``); '
        "a field that is not a column raises before anything is sent. Write ``{{`` and "
        "``}}`` for a literal brace (``'Reply as JSON like {{\"x\": 1}}'``)."
    )
    for f in dataclasses.fields(AskOptions):
        name = f"``**{f.name}``" if f.name == "request_options" else f"``{f.name}``"
        lines.append(f"- {name}: {f.metadata['doc']}")
    width = 96 - indent
    wrapped: list[str] = []
    for line in lines:
        wrapped.extend(
            textwrap.wrap(line, width=width, subsequent_indent="  ", break_on_hyphens=False) or [""]
        )
    pad = " " * indent
    return "\n" + "\n".join(pad + w if w else "" for w in wrapped) + "\n"


def check_signature(function: Callable[..., Any], *, leading: Sequence[str]) -> None:
    """Raise ``TypeError`` unless ``function`` takes ``leading`` then exactly AskOptions'
    fields as keyword parameters, with the same defaults (``request_options`` as ``**``)."""
    params = list(inspect.signature(function).parameters.values())
    names = [p.name for p in params]
    if names[: len(leading)] != list(leading):
        raise TypeError(f"{function.__qualname__} must start with {list(leading)}, not {names}")
    rest = {p.name: p for p in params[len(leading) :]}
    fields = {f.name: f for f in dataclasses.fields(AskOptions)}
    if set(rest) != set(fields):
        raise TypeError(
            f"{function.__qualname__}'s options {sorted(rest)} differ from AskOptions' "
            f"fields {sorted(fields)}"
        )
    for name, f in fields.items():
        p = rest[name]
        if name == "request_options":
            if p.kind is not inspect.Parameter.VAR_KEYWORD:
                raise TypeError(f"{function.__qualname__} must take **request_options")
            continue
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default != f.default:
            raise TypeError(
                f"{function.__qualname__}: {name}={p.default!r} does not match "
                f"AskOptions.{name}={f.default!r} (keyword-only, same default)"
            )
