"""Google Cloud Storage and Azure Blob Storage on 127.0.0.1 for the tests, as s3_server.py is S3.

- GCS: ``gcp-storage-emulator`` (a dev dependency) in a thread, behind a small proxy of our
  own that answers 403 for every object under a ``forbidden/`` prefix (the emulator checks no
  permissions), so a forbidden object can be tested as on S3.
- Azure: Azurite, from the npm registry. ``.ci/install-azurite.sh`` installs it into
  ``.ci/node`` (not in git); ``azurite_command()`` runs that script itself when it has not
  been run in this checkout, so a fresh worktree's suite needs no step by hand. It is started
  with telemetry off (Azurite otherwise reports to an Azure endpoint) and in-memory storage.

Credentials are given through ``storage_options`` only, never the environment.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_NAMES = itertools.count()

# Azurite's documented development account (public, the same in every Azurite)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


# --------------------------------------------------------------------------------------------
# GCS


@dataclass
class GCS:
    endpoint: str  # the proxy in front of the emulator

    @property
    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "token": "anon"}

    def make_bucket(self, objects: dict[str, bytes] | None = None) -> str:
        from gcsfs.core import GCSFileSystem

        name = f"bucket-{next(_NAMES)}"
        fs = GCSFileSystem(**self.options)
        fs.mkdir(name)
        for key, body in (objects or {}).items():
            fs.pipe(f"{name}/{key}", body)
        return name


class _DenyingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards every request to the emulator, except that an object under ``forbidden/`` is
    answered 403 as GCS answers a caller without storage.objects.get."""

    upstream: tuple[str, int] = ("127.0.0.1", 0)
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if re.search(r"/o/forbidden(%2F|/)", self.path):
            data = b'{"error": {"code": 403, "message": "Forbidden", "errors": []}}'
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            with suppress(BrokenPipeError, ConnectionResetError):  # a ranged read hung up
                self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


@contextmanager
def gcs_server() -> Iterator[GCS]:
    from gcp_storage_emulator.server import create_server

    emulator = create_server("127.0.0.1", 0, in_memory=True)
    emulator.start()
    handler = type("Proxy", (_DenyingProxy,), {})
    handler.upstream = ("127.0.0.1", emulator._api._httpd.server_port)
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    proxy.daemon_threads = True
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield GCS(endpoint=f"http://127.0.0.1:{proxy.server_address[1]}")
    finally:
        proxy.shutdown()
        proxy.server_close()
        emulator.stop()


# --------------------------------------------------------------------------------------------
# Azure


@dataclass
class Azure:
    endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1

    def connection_string(self, *, key: str = AZURITE_KEY, sas: str | None = None) -> str:
        auth = f"SharedAccessSignature={sas}" if sas else f"AccountKey={key}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};{auth};"
            f"BlobEndpoint={self.endpoint};"
        )

    @property
    def options(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string()}

    def make_container(self, objects: dict[str, bytes] | None = None) -> str:
        from azure.storage.blob import BlobServiceClient

        name = f"container-{next(_NAMES)}"
        service = BlobServiceClient.from_connection_string(self.connection_string())
        service.create_container(name)
        for key, body in (objects or {}).items():
            service.get_blob_client(name, key).upload_blob(body)
        return name

    def list_only_sas(self, container: str) -> str:
        """A SAS token that may list ``container`` but read nothing in it."""
        import datetime

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return generate_container_sas(
            AZURITE_ACCOUNT,
            container,
            account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(list=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
        )


def azurite_command() -> list[str]:
    """The command that starts Azurite's blob service, installing it first if needed."""
    binary = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        subprocess.run(["bash", str(ROOT / ".ci" / "install-azurite.sh")], check=True)
    return [str(binary)]


@contextmanager
def azurite_server(folder: Path) -> Iterator[Azure]:
    log = folder / "azurite.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                *azurite_command(),
                "--blobHost=127.0.0.1",
                "--blobPort=0",
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        port = _wait_for_port(log, process)
        yield Azure(endpoint=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for_port(log: Path, process: subprocess.Popen[bytes]) -> int:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(r"listens on http://127\.0\.0\.1:(\d+)", log.read_text())
        if m:
            return int(m.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"Azurite did not start: {log.read_text()[-2000:]}")
