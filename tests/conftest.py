"""Fixtures shared by tests/ (the root conftest.py holds the session-wide environment).

What is here, so a test file does not define it again:

- ``s3``: a real S3 API on 127.0.0.1, started once per session (moto's server mode, in a
  thread), handed to tests as an ``S3`` helper (tests/s3_server.py). moto and s3fs come with
  the dev extra: without them these tests fail rather than skip, so CI cannot go green
  without them.
- ``gcs``, ``azure``: Google Cloud Storage and Azure Blob Storage on 127.0.0.1 (an emulator
  from PyPI and Azurite from npm, started once per session: tests/object_stores.py).
- ``server``: the offline stand-in (``visionkit.offline.serve()``) for one test: its base URL,
  whose ``.server`` is the running server (``server.server.stats``, ``.inject``).
- ``client``: ``vk.connect("offline", ...)`` to that server, through the real ``openai`` SDK.
- ``cache``: a fresh answer cache (``visionkit.query.cache.Cache``) in the test's tmp_path.
- ``fast_backoff``: retry delays of 10-50 ms instead of the SDK policy's seconds, for tests
  about what a retry does, not how long it waits (the policy has its own tests in
  test_ask_retry.py). A file opts in with ``pytestmark = pytest.mark.usefixtures(...)``.
- ``when``: ``when(condition, action)`` runs ``action()`` on a daemon thread as soon as
  ``condition()`` holds: a key revoked, or Ctrl-C pressed (``_thread.interrupt_main``), in
  the middle of a run.

A file that needs another thing under one of these names (test_offline*.py and test_batch.py
use the ``OfflineServer`` object as ``server``) defines its own fixture, which takes
precedence in that file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from object_stores import GCS, Azure, azurite_server, gcs_server
from s3_server import S3

import visionkit as vk
from visionkit import offline
from visionkit.query import retry
from visionkit.query.cache import Cache


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs() -> Iterator[GCS]:
    """A GCS JSON API on 127.0.0.1 (gcp-storage-emulator, tests/object_stores.py)."""
    with gcs_server() as store:
        yield store


@pytest.fixture(scope="session")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azure]:
    """Azure Blob Storage on 127.0.0.1 (Azurite from npm, tests/object_stores.py)."""
    with azurite_server(tmp_path_factory.mktemp("azurite")) as store:
        yield store


@pytest.fixture(scope="session")
def dask_client() -> Iterator[object]:
    """A distributed.LocalCluster of 2 worker processes (1 thread each), once per session, and
    its Client (the Dask tests run on it: tests/test_dask_*.py)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture
def server() -> Iterator[Any]:
    with offline.serve() as url:
        yield url


@pytest.fixture
def client(server: Any) -> vk.Client:
    return vk.connect("offline", base_url=server, api_key="offline")


@pytest.fixture
def cache(tmp_path: Any) -> Iterator[Cache]:
    with Cache(tmp_path / "answers.sqlite") as c:
        yield c


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(retry, "MAX_RETRY_DELAY", 0.05)


@pytest.fixture
def when() -> Callable[[Callable[[], bool], Callable[[], object]], None]:
    def start(condition: Callable[[], bool], action: Callable[[], object]) -> None:
        def watch() -> None:
            while not condition():
                time.sleep(0.002)
            action()

        threading.Thread(target=watch, daemon=True).start()

    return start
