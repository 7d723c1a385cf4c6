"""Chat request pieces for the offline stand-in's tests (test_offline*.py): images as bytes and
data URIs, user messages, batch input lines."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image

MODEL = "visionkit-offline"


def image_bytes(size=(64, 48), colour=(30, 150, 40), fmt="JPEG", **save) -> bytes:
    buf = io.BytesIO()
    mode = "RGBA" if len(colour) == 4 else "RGB"
    Image.new(mode, size, colour).save(buf, fmt, **save)
    return buf.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def jpeg_uri(size=(64, 48), colour=(30, 150, 40)) -> str:
    return data_uri(image_bytes(size, colour), "image/jpeg")


def user(text: str, *urls: str) -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]


def chat_body(text: str, *urls: str, model: str = MODEL, **options) -> dict:
    return {"model": model, "messages": user(text, *urls), **options}


def batch_line(custom_id: str, body: dict, **fields) -> dict:
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    line.update(fields)
    return line


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    """Write ``lines`` the way visionkit does: compact JSON, UTF-8, one object per line."""
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    return path


def read_jsonl(data: bytes) -> dict[str, dict]:
    """An output or error file's lines by custom_id."""
    return {obj["custom_id"]: obj for obj in map(json.loads, data.splitlines()) if obj}
