"""What a Batch API server sends, checked before any of it is used: the Batch object of a poll,
the ids it names, and each line of a result file.

Everything here is data from the network, never trusted structure: a field of the wrong type, an
id that is not an id, a status the API does not document are found here, once, and turned into
a row's error or a stopped wait by the caller -- never an exception out of ``wait()`` on every
poll. The shapes are pydantic models of the parts visionkit reads (OpenAI's Batch API, which
inference.net copies); fields it does not read are ignored.

Statuses: ``RUNNING`` (validating, in_progress, finalizing, cancelling) are the only ones a
wait waits on; ``TERMINAL`` (completed, failed, expired, cancelled) are collected; anything else
is unknown and ends the wait naming it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ..query.cache import CachedAnswer

__all__ = [
    "RUNNING",
    "TERMINAL",
    "BatchState",
    "LineResult",
    "batch_state",
    "check_id",
    "line_error",
    "parse_line",
    "user_stacklevel",
]

RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})

# A file or batch id: what the server may name and visionkit puts in a URL path (no "/", no
# "..", no spaces), at most 200 characters.
_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,199}")
_PACKAGE = str(Path(__file__).resolve().parents[1])

_CLASSES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
}

Count = Annotated[int, Field(ge=0)]


def check_id(value: Any, what: str) -> str:
    """``value`` if it is a well-formed id, else ``ValueError`` naming ``what`` it should be."""
    if isinstance(value, str) and _ID.fullmatch(value) and ".." not in value:
        return value
    raise ValueError(f"the server sent {what} {str(value)[:80]!r}, which is not an id")


def _id(value: Any) -> Any:
    return None if value is None else check_id(value, "an id")


OptionalId = Annotated[str | None, pydantic.BeforeValidator(_id)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Counts(_Model):
    total: Count = 0
    completed: Count = 0
    failed: Count = 0


class _BatchError(_Model):
    code: str | None = None
    message: str | None = None
    line: int | None = None


class _BatchErrors(_Model):
    data: list[_BatchError] = []


class BatchState(_Model):
    """The parts of a ``Batch`` object visionkit uses, checked."""

    id: Annotated[str, pydantic.BeforeValidator(lambda v: check_id(v, "a batch id"))]
    status: Annotated[StrictStr, Field(max_length=64)]
    input_file_id: OptionalId = None
    output_file_id: OptionalId = None
    error_file_id: OptionalId = None
    request_counts: _Counts | None = None
    errors: _BatchErrors | None = None

    @property
    def counts(self) -> _Counts:
        return self.request_counts or _Counts()

    def failure(self) -> str:
        """Why a ``failed`` batch failed, from its ``errors`` (the first three)."""
        data = self.errors.data if self.errors else []
        parts = [f"line {e.line}: {e.message}" if e.line else str(e.message) for e in data[:3]]
        return "; ".join(parts) or "no reason given"

    def too_large(self) -> bool:
        """Whether the batch failed validation for its size (too many lines or bytes)."""
        data = self.errors.data if self.errors else []
        words = ("too_many", "too many", "too large", "too_large", "exceed", "maximum")
        return any(any(w in f"{e.code} {e.message}".lower() for w in words) for e in data)


def batch_state(data: Any, expected_id: str | None = None) -> BatchState | str:
    """The Batch object from a server's JSON, or why it does not fit (a short text)."""
    try:
        state = BatchState.model_validate(data)
    except pydantic.ValidationError as exc:
        return _reason(exc)
    if expected_id is not None and state.id != expected_id:
        return f"it describes batch {state.id!r}, not {expected_id!r}"
    return state


# -- result lines ------------------------------------------------------------------------------


class _Response(_Model):
    status_code: int
    body: Any = None


class _LineErrorBody(_Model):
    code: str | None = None
    message: str | None = None


class _Line(_Model):
    custom_id: StrictStr
    response: _Response | None = None
    error: _LineErrorBody | None = None


class _Usage(_Model):
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None


class _Message(_Model):
    content: StrictStr | None = None


class _Choice(_Model):
    message: _Message


class _Body(_Model):
    choices: Annotated[list[_Choice], Field(min_length=1)]
    usage: _Usage | None = None
    model: StrictStr | None = None


_LINE = pydantic.TypeAdapter(_Line)
_BODY = pydantic.TypeAdapter(_Body)
_ID_ONLY = re.compile(rb'"custom_id"\s*:\s*"([^"\\]{1,200})"')


@dataclass(frozen=True, slots=True)
class LineResult:
    """One result line, checked: its ``custom_id`` (``None``: none could be read), and its
    answer or its error (the row's error text)."""

    custom_id: str | None
    answer: CachedAnswer | None = None
    error: str | None = None


def _reason(exc: pydantic.ValidationError, limit: int = 2) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "the line"
        got = repr(err.get("input"))[:40]
        parts.append(f"{where}: {err['msg'].lower()} (got {got})")
    return "; ".join(parts)


def line_error(status: int, body: Any) -> str:
    """A failed response's row error, worded as ``ask`` words the same failure."""
    inner = body.get("error", body) if isinstance(body, dict) else body
    message = inner.get("message") if isinstance(inner, dict) else inner
    name = _CLASSES.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
    return f"{name} ({status}): {str(message)[:500] if message is not None else ''}"


def parse_line(
    raw: bytes, model: str | None, provider: str | None, tokens: Mapping[str, int | None]
) -> LineResult:
    """One line of an output or error file: an answer (a 2xx response with a choice), or that
    row's error -- an error response, an unrun line, or a line that does not fit the format.
    ``tokens``: the estimate of each key (stored with its answer)."""
    try:
        line = _LINE.validate_json(raw)
    except pydantic.ValidationError as exc:
        found = _ID_ONLY.search(raw)
        custom_id = found.group(1).decode("utf-8", "replace") if found else None
        return LineResult(custom_id, error=f"the result line does not fit: {_reason(exc)}")
    key = line.custom_id
    if line.error is not None and (line.error.code or line.error.message):
        text = f"{line.error.code or 'error'}: {line.error.message or ''}".strip()
        return LineResult(key, error=text[:1000])
    if line.response is None:
        return LineResult(key, error="the result line holds no response and no error")
    status = line.response.status_code
    if not 200 <= status < 300:
        return LineResult(key, error=line_error(status, line.response.body))
    try:
        body = _BODY.validate_python(line.response.body)
    except pydantic.ValidationError as exc:
        return LineResult(key, error=f"the result line does not fit: response.body.{_reason(exc)}")
    usage = body.usage or _Usage()
    return LineResult(
        key,
        answer=CachedAnswer(
            answer=body.choices[0].message.content,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimated_tokens=tokens.get(key),
            model=body.model or model,
            provider=provider,
        ),
    )


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning name the first frame outside visionkit (the
    user's line), counted from the caller of ``warnings.warn``."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
