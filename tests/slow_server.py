"""A misbehaving HTTP server on a real socket: it trickles bodies or asks for endless pauses.

For the deadline tests, where the point is what the real transport (etl/http11.py) does with the
bytes on the wire, so an in-process transport cannot stand in for it.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any


class SlowServer:
    """``mode`` = ``trickle`` (200 whose body comes one byte every ``interval`` seconds) or
    ``retry_after`` (429 with ``Retry-After: 999999`` to every request)."""

    def __init__(self, mode: str, interval: float = 1.5) -> None:
        self.mode = mode
        self.interval = interval
        self.requests = 0
        self.seen = threading.Event()
        self.closing = threading.Event()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server.serve_one(self.request)

        socketserver.ThreadingTCPServer.daemon_threads = True
        self._tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._tcp.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._tcp.server_address[1]}/v1.0"

    def serve_one(self, sock: socket.socket) -> None:
        sock.settimeout(60)
        try:
            while not self.closing.is_set():
                request = b""
                while b"\r\n\r\n" not in request:
                    part = sock.recv(65536)
                    if not part:
                        return
                    request += part
                self.requests += 1
                self.seen.set()
                if self.mode == "retry_after":
                    sock.sendall(
                        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 999999\r\n"
                        b"Content-Length: 0\r\n\r\n"
                    )
                    continue
                body = b'{"id": "x", "padding": "' + b"p" * 1000 + b'"}'
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                )
                for byte in body:
                    if self.closing.wait(self.interval):
                        return
                    sock.sendall(bytes([byte]))
        except OSError:
            return

    def __enter__(self) -> SlowServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closing.set()
        self._tcp.shutdown()
        self._tcp.server_close()
