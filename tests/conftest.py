"""Fixtures shared by tests/ (the root conftest.py holds the session-wide environment).

``s3`` starts a real S3 API on 127.0.0.1 once per session (moto's server mode, in a thread)
and hands tests an ``S3`` helper (tests/s3_server.py). moto and s3fs come with the dev extra:
without them these tests fail rather than skip, so CI cannot go green without them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from s3_server import S3


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
