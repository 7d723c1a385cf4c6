"""What the offline stand-in's tests (test_offline*.py, test_batch*.py) share: chat request
pieces (images as bytes and data URIs, user messages, batch input lines), the stand-in's command
line, and two fixtures, which a test file takes by assigning them (importing the names would
make ruff see each test's parameter as a redefinition)::

    server, client = offline_helpers.server, offline_helpers.client

- ``server``: a fresh ``OfflineServer`` for one test (the object: ``stats``, ``inject``...),
  its uploads unpaced so batch tests do not wait a minute between files;
- ``client``: the real ``openai.OpenAI`` on it, SDK retries off (the tests count what is sent).

(tests/conftest.py's ``server`` and ``client`` are the ask tests' -- a URL and a
``vk.connect`` client -- so a file importing these gets these.)
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from PIL import Image

from visionkit import offline

MODEL = "visionkit-offline"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server() -> Iterator[offline.OfflineServer]:
    with offline.OfflineServer(upload_interval=0) as srv:
        yield srv


@pytest.fixture
def client(server: offline.OfflineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="offline", max_retries=0) as c:
        yield c


def command_line(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m visionkit.offline --port 0 ARGS`` started; returns the process and the base
    URL it prints once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "visionkit.offline", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split(" at ", 1)[1].split()[0]


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
