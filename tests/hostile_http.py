"""Raw-socket HTTP servers on 127.0.0.1 that misbehave on purpose, for the download tests.

``raw_server(handler)`` accepts connections in a thread and calls ``handler(conn, request)``
with the connected socket and the request head it read; the handler writes whatever bytes it
likes. Every loop here is bounded in count and time, and the server stops with its context.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    sent: int = 0  # payload bytes a dripping handler managed to send
    gave_up: threading.Event = field(default_factory=threading.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def raw_server(handler: Callable[[socket.socket, bytes, Server], None]) -> Iterator[Server]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    state = Server(port=listener.getsockname()[1])
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            with suppress(OSError):
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
            state.requests.append(head)
            with suppress(OSError):
                handler(conn, head, state)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            state.connections += 1
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def drip(conn: socket.socket, data: bytes, state: Server, every: float, limit: float) -> None:
    """Send ``data`` one byte every ``every`` seconds, for at most ``limit`` seconds."""
    end = time.monotonic() + limit
    for i in range(len(data)):
        if time.monotonic() > end:
            return
        try:
            conn.sendall(data[i : i + 1])
        except OSError:
            state.gave_up.set()  # the client hung up
            return
        state.sent += 1
        time.sleep(every)
