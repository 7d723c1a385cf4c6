"""A batch's input file checked line by line, as the Batch API does before running it.

Each line must be a JSON object with its own ``custom_id``, ``method`` POST, a ``url`` (when
given) equal to the batch's endpoint and a ``body`` object; every body must name the same
model, and the file may hold at most the profile's ``max_requests_per_file`` lines. The errors
come back as the Batches API reports them (``errors.data``: code, message, param, line), the
first ``MAX_REPORTED_ERRORS`` of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..providers import BatchLimits

__all__ = ["MAX_REPORTED_ERRORS", "validate_file"]

MAX_REPORTED_ERRORS = 100


def validate_file(path: Path, limits: BatchLimits) -> tuple[list[dict[str, Any]], int, str | None]:
    """Check a batch input file line by line: (errors, number of lines, the model named)."""
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    n = 0

    def bad(line: int, code: str, message: str, param: str | None = None) -> None:
        if len(errors) < MAX_REPORTED_ERRORS:
            errors.append({"code": code, "message": message, "param": param, "line": line})

    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                obj = json.loads(raw)
            except ValueError:
                bad(n, "invalid_json_line", f"Line {n} is not valid JSON.")
                continue
            if not isinstance(obj, dict):
                bad(n, "invalid_json_line", f"Line {n} is not a JSON object.")
                continue
            custom_id = obj.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                bad(n, "missing_required_parameter", "custom_id is required.", "custom_id")
            elif custom_id in seen:
                bad(
                    n,
                    "duplicate_custom_id",
                    f"custom_id {custom_id!r} is used more than once in this file; each line "
                    "needs its own.",
                    "custom_id",
                )
            else:
                seen.add(custom_id)
            if obj.get("method") != "POST":
                bad(n, "invalid_method", "Only POST is supported.", "method")
            # inference.net's file-format reference says url is not required (the endpoint is
            # taken from the batch); OpenAI requires it. Given, it must be the batch's endpoint.
            url = obj.get("url")
            if url is not None and url != limits.endpoint:
                bad(n, "invalid_url", f"url must be {limits.endpoint!r} in this batch.", "url")
            body = obj.get("body")
            if not isinstance(body, dict):
                bad(n, "missing_required_parameter", "body must be a JSON object.", "body")
                continue
            line_model = body.get("model")
            if model is None and isinstance(line_model, str):
                model = line_model
            elif line_model != model:
                bad(
                    n,
                    "mismatched_model",
                    f"Line {n} names model {line_model!r}; every line of a batch must use "
                    f"the same model ({model!r}).",
                    "body.model",
                )
    if n == 0:
        bad(0, "empty_file", "The input file has no requests.")
    cap = limits.max_requests_per_file
    if cap is not None and n > cap:
        bad(
            0,
            "too_many_requests",
            f"The input file has {n:,} requests; a batch may have at most {cap:,}.",
        )
    return errors, n, model
