"""The stand-in's answers: plain text, ``json_object`` and ``json_schema`` content, the
completion object with its token counts, and the same as a Server-Sent Events stream."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from .describe import PREFIX, ImageFacts
from .rules import Parsed, short

__all__ = ["answer_text", "completion", "count_text", "fill_schema", "sse_body"]


_QUESTION_WORDS = re.compile(
    r"\?|^\s*(is|are|does|do|did|can|could|should|will|what|which|who|whom|whose|where|how|"
    r"why|when|count|name|identify|classify)\b",
    re.IGNORECASE,
)


def answer_text(facts: Sequence[ImageFacts], prompt: str) -> str:
    """The plain-text answer: the pixels described, and an honest word about the question."""
    if not facts:
        body = f"{PREFIX}: this request holds no image, so there is nothing to describe."
    elif len(facts) == 1:
        body = f"{PREFIX}: {facts[0].phrase()}."
    else:
        parts = "; ".join(f"image {i} is {f.phrase()}" for i, f in enumerate(facts, 1))
        body = f"{PREFIX}: {parts}."
    if prompt.strip() and _QUESTION_WORDS.search(prompt):
        body += (
            f' It cannot see what the image shows, so it does not answer "{short(prompt)}";'
            " use a real vision model for that."
        )
    return body


def count_text(counts: Sequence[int]) -> str:
    """The answer to "how many marks": the count first, as a model asked for a number gives it."""

    def marks(n: int) -> str:
        return f"{n} red mark{'' if n == 1 else 's'}"

    if len(counts) == 1:
        said = marks(counts[0])
    else:
        said = "; ".join(f"image {i}: {marks(n)}" for i, n in enumerate(counts, 1))
    return f"{said} ({PREFIX.replace('describes pixels only', 'counts small red marks only')})"


def _facts_payload(
    facts: Sequence[ImageFacts], prompt: str, counts: Sequence[int] | None = None
) -> dict[str, Any]:
    images = [f.as_dict() for f in facts]
    if counts is not None:
        for image, n in zip(images, counts, strict=True):
            image["count"] = n
    first = dict(images[0]) if images else {}
    first["description"] = count_text(counts) if counts else answer_text(facts, prompt)
    first["images"] = images
    return first


_ALIASES = {
    "description": ("description", "caption", "summary", "answer", "text", "explanation"),
    "dominant_colours": ("dominant_colours", "dominant_colors", "colours", "colors"),
    "width": ("width", "image_width"),
    "height": ("height", "image_height"),
    "format": ("format", "image_format", "file_format"),
    "brightness": ("brightness",),
    "images": ("images",),
    "frames": ("frames", "n_frames"),
    "count": ("count", "marks", "n_marks", "mark_count", "number", "total"),
}
_LOOKUP = {alias: fact for fact, names in _ALIASES.items() for alias in names}


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        target: Any = root
        if isinstance(ref, str) and ref.startswith("#/"):
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
        else:
            target = {}
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    if "enum" in schema:
        return value in schema["enum"]
    if "const" in schema:
        return value == schema["const"]
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if not kinds:
        return True
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    return any(checks.get(k, lambda v: False)(value) for k in kinds)


_BOX_LISTS = ("boxes", "regions", "objects", "detections")
_CORNERS = ("x_min", "y_min", "x_max", "y_max")


def _central_box(
    name: str, schema: dict[str, Any], facts: dict[str, Any], root: dict[str, Any]
) -> dict[str, Any] | None:
    """For a list of boxes (``boxes: [{label, x_min, y_min, x_max, y_max}]`` or ``x, y, w,
    h``): one box around the central half of the image received, in its pixels. The stand-in
    cannot see objects; a fixed, checkable region lets tests follow coordinates end to end."""
    if str(name).lower() not in _BOX_LISTS or schema.get("type") != "array":
        return None
    item = _resolve(schema.get("items", {}), root)
    props = item.get("properties") or {}
    width, height = facts.get("width"), facts.get("height")
    if not isinstance(width, int) or not isinstance(height, int):
        return None
    if set(_CORNERS) <= set(props):
        box: dict[str, Any] = dict(
            zip(_CORNERS, (width / 4, height / 4, width * 3 / 4, height * 3 / 4), strict=True)
        )
    elif set("xywh") <= set(props):
        box = {"x": width / 4, "y": height / 4, "w": width / 2, "h": height / 2}
    else:
        return None
    if "label" in props:
        label = _resolve(props["label"], root)
        box["label"] = label["enum"][0] if label.get("enum") else "region"
    return box


def fill_schema(
    schema: Any, facts: dict[str, Any], *, root: dict[str, Any] | None = None, depth: int = 0
) -> Any:
    """A value valid for a JSON schema, filled best-effort from ``facts``.

    Known property names (width, height, format, dominant_colours/colors, brightness,
    description/caption/summary/answer) take the facts; a list of boxes named ``boxes``
    (``regions``, ``objects``, ``detections``) gets one box around the central half of the
    image; anything else gets a type-correct
    default: the schema's ``default`` if it has one, else strings the description, numbers 0 (or
    their minimum), booleans false, enums their first value, arrays ``[]`` (or ``minItems``
    items), objects filled recursively.
    """
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = _resolve(schema, root)
    if depth > 12:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if _resolve(o, root).get("type") != "null"]
            if key == "allOf":
                merged: dict[str, Any] = {}
                for option in options:
                    merged.update(_resolve(option, root))
                return fill_schema(merged, facts, root=root, depth=depth + 1)
            return fill_schema((non_null or options)[0], facts, root=root, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    description = str(facts.get("description", PREFIX))
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return dict(facts)
        out: dict[str, Any] = {}
        for name, sub in props.items():
            sub = _resolve(sub, root)
            fact = _LOOKUP.get(str(name).lower().replace("-", "_"))
            value = facts.get(fact) if fact else None
            if fact == "format" and isinstance(value, str):
                upper = [e for e in sub.get("enum", []) if str(e).lower() == value]
                value = upper[0] if upper else value
            if value is not None and _fits(value, sub):
                out[name] = value
            elif (box := _central_box(name, sub, facts, root)) is not None:
                out[name] = [box]
            elif sub.get("type") == "array" and fact == "images" and isinstance(value, list):
                item = sub.get("items", {})
                out[name] = [fill_schema(item, v, root=root, depth=depth + 1) for v in value]
            elif "default" in sub:
                out[name] = sub["default"]  # the schema's own fallback
            else:
                out[name] = fill_schema(sub, facts, root=root, depth=depth + 1)
        return out
    if kind == "array":
        n = int(schema.get("minItems", 0) or 0)
        return [fill_schema(schema.get("items", {}), facts, root=root, depth=depth + 1)] * n
    if kind == "string":
        if schema.get("format") in ("date-time", "date", "time", "uri", "email", "uuid"):
            defaults = {
                "date-time": "1970-01-01T00:00:00Z",
                "date": "1970-01-01",
                "time": "00:00:00",
                "uri": "about:blank",
                "email": "offline@example.invalid",
                "uuid": "00000000-0000-0000-0000-000000000000",
            }
            return defaults[schema["format"]]
        text = description
        max_len = schema.get("maxLength")
        if isinstance(max_len, int):
            text = text[:max_len]
        min_len = schema.get("minLength")
        if isinstance(min_len, int) and len(text) < min_len:
            text = text.ljust(min_len, ".")
        return text
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = 0 if low is None else low + (1 if "exclusiveMinimum" in schema else 0)
        high = schema.get("maximum")
        if high is not None and value > high:
            value = high
        return math.ceil(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return None


def completion(
    parsed: Parsed,
    facts: list[ImageFacts],
    request_id: str,
    *,
    counts: Sequence[int] | None = None,
) -> tuple[dict[str, Any], int]:
    """The completion object and its completion tokens; ``counts``: the marks counted in each
    image when the prompt asked for them (``visionkit.offline.marks``)."""
    rf = parsed.response_format or {}
    kind = rf.get("type", "text")
    if kind == "json_object":
        content = json.dumps(_facts_payload(facts, parsed.prompt, counts), ensure_ascii=False)
    elif kind == "json_schema":
        schema = rf.get("json_schema", {}).get("schema") or {}
        value = fill_schema(schema, _facts_payload(facts, parsed.prompt, counts))
        content = json.dumps(value, ensure_ascii=False)
    elif counts:
        content = count_text(counts)
    else:
        content = answer_text(facts, parsed.prompt)
    finish = "stop"
    if parsed.max_tokens is not None and math.ceil(len(content) / 4) > parsed.max_tokens:
        content = content[: parsed.max_tokens * 4]
        finish = "length"
    completion_tokens = math.ceil(len(content) / 4)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": finish,
        }
        for i in range(parsed.n)
    ]
    response = {
        "id": "chatcmpl-" + request_id[4:],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": parsed.model,
        "choices": choices,
        "system_fingerprint": "visionkit-offline",
    }
    return response, completion_tokens * parsed.n


def sse_body(response: dict[str, Any], include_usage: bool) -> bytes:
    """The completion as a Server-Sent Events stream of chat.completion.chunk objects."""
    base = {k: response[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    events = []
    for choice in response["choices"]:
        i = choice["index"]
        text = choice["message"]["content"]
        words = re.findall(r"\S+\s*|\s+", text) or [""]
        first = {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        events.append({**base, "choices": [first]})
        for w in words:
            delta = {"index": i, "delta": {"content": w}, "finish_reason": None}
            events.append({**base, "choices": [delta]})
        last = {"index": i, "delta": {}, "finish_reason": choice["finish_reason"]}
        events.append({**base, "choices": [last]})
    if include_usage:
        events.append({**base, "choices": [], "usage": response["usage"]})
    out = [f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events]
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()
