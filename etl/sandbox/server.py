"""Serving a sandbox over TCP with uvicorn: blocking (:func:`serve`) or in a thread
(:class:`ServerThread`, for tests and benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from etl.sandbox.box import Sandbox


def _config(sandbox: Sandbox, **kwargs: Any) -> Any:
    # log_config None: uvicorn's few warnings go through the process's logging set-up (text
    # or JSON) instead of uvicorn's own handlers.
    return uvicorn.Config(
        sandbox.app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        log_config=None,
        **kwargs,
    )


def listen_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0 = a free port); raises ``OSError`` (e.g. the port
    is in use) before anything is served, so a caller can say so before announcing the server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only then;
    # without it every keep-alive answer (headers and body: two writes) waits ~40 ms for a
    # delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    sandbox: Sandbox, host: str = "127.0.0.1", port: int = 8080, sock: socket.socket | None = None
) -> None:
    """Serve ``sandbox`` on ``sock`` (from :func:`listen_socket`), else on ``host:port``, until
    interrupted (Ctrl-C)."""
    sock = sock or listen_socket(host, port)
    uvicorn.Server(_config(sandbox)).run(sockets=[sock])


class UvicornThread:
    """A uvicorn server on an already bound socket, run in a daemon thread (the sandbox's API
    and its certificate host both serve this way)."""

    def __init__(self, config: Any, sock: socket.socket, name: str) -> None:
        self._socket = sock
        self._server: Any = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=name, daemon=True
        )

    def start(self, what: str, timeout: float = 10.0) -> None:
        """Start serving; returns once the server accepts connections, or raises naming ``what``."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to finish, wait for its thread, close the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()


class ServerThread:
    """Serve ``sandbox`` from a daemon thread while inside ``with``; ``port=0`` picks a free port.

    >>> with ServerThread(Sandbox(count=10)) as server:  # doctest: +SKIP
    ...     httpx.get(server.base_url + "/engagements/referrals", headers=auth)
    """

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sandbox = sandbox
        self.host = host
        self._socket = listen_socket(host, port)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.base_url = self.url + "/v1.0"
        self._runner = UvicornThread(_config(sandbox), self._socket, f"sandbox-{self.port}")

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the server accepts connections."""
        self._runner.start(f"sandbox server on {self.url}", timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to finish and wait for its thread."""
        self._runner.stop(timeout)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
