"""Structured answers: turn ``schema=`` (a pydantic model or a JSON schema) into a
``response_format`` and parse each reply into fields, with a short reason when it fails.

A failed parse is that row's error; the raw reply stays in ``answer`` (see ``visionkit.ask``).

Each field becomes a column whose dtype comes from the schema, not from the values that
happened to arrive, so a failed row (``<NA>``) does not turn ``int`` into ``float64`` or
``bool`` into ``object``: integer -> ``Int64``, number -> ``Float64``, boolean -> ``boolean``,
string -> ``string`` (pandas' nullable dtypes); anything else (lists, objects, unions) stays
``object``. ``Optional[int]`` (``anyOf`` with ``null``) is still ``Int64``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Schema", "make_schema"]


@dataclass
class Schema:
    """A structured-output schema: the ``response_format`` to send and a parser for replies."""

    name: str
    json_schema: dict[str, Any]
    fields: list[str]
    model: Any = None  # a pydantic model class, if given

    @property
    def dtypes(self) -> dict[str, str]:
        """The pandas dtype of each field's column (see the module docstring)."""
        properties = self.json_schema.get("properties") or {}
        return {f: _dtype(properties.get(f)) for f in self.fields}

    @property
    def response_format(self) -> dict[str, Any]:
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.json_schema},
        }

    def parse(self, text: str | None) -> dict[str, Any]:
        """Parse and validate ``text``; raises ValueError with a short reason."""
        if text is None:
            raise ValueError("the reply has no text to parse")
        if self.model is not None:
            import pydantic

            try:
                return self.model.model_validate_json(text).model_dump(mode="json")
            except pydantic.ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors()
                )
                raise ValueError(f"reply does not match schema {self.name}: {problems}") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"reply is not valid JSON: {exc}") from None
        _validate(obj, self.json_schema, "reply")
        return {f: obj.get(f) for f in self.fields}


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _validate(value: Any, schema: Mapping[str, Any], where: str) -> None:
    """A small JSON-schema check: types, required properties, enums (nested objects too)."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        ok = False
        for name in names:
            kinds = _JSON_TYPES.get(name, (object,))
            if isinstance(value, bool) and name in ("integer", "number"):
                continue
            if isinstance(value, kinds):
                ok = True
                break
        if not ok:
            raise ValueError(f"{where} should be {' or '.join(names)}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{where} should be one of {schema['enum']}, got {value!r}")
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", ()) if k not in value]
        if missing:
            raise ValueError(f"{where} is missing {', '.join(map(repr, missing))}")
        for key, sub in (schema.get("properties") or {}).items():
            if key in value and isinstance(sub, Mapping):
                _validate(value[key], sub, f"{key}" if where == "reply" else f"{where}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _validate(item, schema["items"], f"{where}[{i}]")


# "string[python]": pandas' nullable string dtype (shown as ``string``). Its default storage in
# pandas 3 is pyarrow when installed, and then value_counts() and friends return
# ``int64[pyarrow]`` where every other column gives plain or nullable ints: a surprise in a
# notebook for no gain on columns of short answers.
_DTYPES = {
    "integer": "Int64",
    "number": "Float64",
    "boolean": "boolean",
    "string": "string[python]",
}


def _dtype(prop: Any) -> str:
    """A nullable pandas dtype for one JSON-schema property, or ``object``."""
    if not isinstance(prop, Mapping):
        return "object"
    kinds: list[Any] = []
    if "type" in prop:
        kinds = [prop["type"]] if isinstance(prop["type"], str) else list(prop["type"])
    elif isinstance(prop.get("anyOf"), list):
        for option in prop["anyOf"]:
            if not isinstance(option, Mapping) or not isinstance(option.get("type"), str):
                return "object"
            kinds.append(option["type"])
    elif isinstance(prop.get("enum"), list) and prop["enum"]:
        values = prop["enum"]
        if all(isinstance(v, str) for v in values):
            kinds = ["string"]
        elif all(isinstance(v, bool) for v in values):
            kinds = ["boolean"]
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            kinds = ["integer"]
    kinds = [k for k in kinds if k != "null"]
    if len(kinds) == 1 and kinds[0] in _DTYPES:
        return _DTYPES[kinds[0]]
    return "object"


def make_schema(schema: Any) -> Schema | None:
    """A pydantic model class, a JSON schema dict, or OpenAI's ``{"name", "schema"}`` wrapper."""
    if schema is None:
        return None
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        return Schema(
            name=schema.__name__,
            json_schema=schema.model_json_schema(),
            fields=list(getattr(schema, "model_fields", {})),
            model=schema,
        )
    if isinstance(schema, Mapping):
        schema = dict(schema)
        if "schema" in schema and isinstance(schema["schema"], Mapping):
            name = str(schema.get("name") or "response")
            body = dict(schema["schema"])
        else:
            name = str(schema.get("title") or "response")
            body = schema
        fields = list((body.get("properties") or {}).keys())
        if not fields:
            raise ValueError("schema= needs an object schema with 'properties'")
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]
        return Schema(name=name, json_schema=body, fields=fields)
    raise TypeError(
        f"schema= must be a pydantic model class or a JSON schema dict, not {type(schema).__name__}"
    )
