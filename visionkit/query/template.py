"""Prompt templates: ``str.format_map`` prompts such as ``"Is this a {label}?"``, filled per row.

A field that is not a column is an error for the whole call, raised before anything is sent;
an NA value in a used field is that row's error. Write ``{{`` and ``}}`` for a literal brace.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import RequestError

__all__ = ["BRACES", "check_template", "fill_template", "template_fields"]

BRACES = (
    "A {name} in the prompt is filled from that column; to write a literal brace, double "
    "it: {{ and }} "
    "(e.g. 'Reply as JSON like {{\"x\": 1}}' sends 'Reply as JSON like {\"x\": 1}')"
)

# A format field's name is its root, then ``.attr`` or ``[key]`` parts (str.format's grammar).
_FIELD_PARTS = re.compile(r"[.\[]")


def template_fields(template: str) -> list[str]:
    """The row fields ``template`` uses, in order (``"{a} {b.x} {c[0]}"`` -> a, b, c)."""
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"prompt template {template!r} is not valid: {exc}. {BRACES}") from None
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ValueError(
                f"prompt template {template!r} uses a positional field '{{{field}}}'; "
                "name a column instead, e.g. '{label}' (write '{{' for a literal brace)"
            )
        root = _FIELD_PARTS.split(field, maxsplit=1)[0]
        if root not in fields:
            fields.append(str(root))
        if spec:
            fields.extend(f for f in template_fields(spec) if f not in fields)
    return fields


def check_template(template: str, columns: Sequence[Any]) -> list[str]:
    """Raise ``RequestError`` (before anything is sent) if the template names a missing column."""
    fields = template_fields(template)
    missing = [f for f in fields if f not in set(map(str, columns))]
    if missing:
        raise RequestError(
            f"prompt template {template!r} needs {', '.join(map(repr, missing))}, which "
            f"{'is not a column' if len(missing) == 1 else 'are not columns'}; "
            f"columns are {list(columns)}. {BRACES}"
        )
    return fields


def fill_template(template: str, values: Mapping[str, Any], *, row: object = None) -> str:
    """``template.format_map(values)``; an NA value or a formatting error is ``row``'s error."""
    for name, value in values.items():
        if value is None or (not isinstance(value, (list, tuple, dict)) and _is_na(value)):
            raise RequestError(f"prompt field {name!r} is missing (NA) in this row", row=row)
    try:
        return template.format_map(values)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise RequestError(f"cannot fill prompt template {template!r}: {exc}", row=row) from None


def _is_na(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
