"""What the client puts on the wire, on a real socket: the request line, the headers, the proxy.

The client drives httpx's Auth and transport itself (no ``httpx.AsyncClient``), so what the
client layer used to do for it is pinned here: the environment's proxy is used (and ``NO_PROXY``
honoured), the fixed headers go with every request, and a 401 is answered by one retry with a
fresh token.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncGenerator, Iterator

import httpx
import pytest

from etl.client import ReferralsClient
from etl.config import ApiSettings
from etl.results import Outcome

REFERRAL = "8f1e2a3b-0000-4000-8000-000000000001"


class Recorder:
    """A one-thread HTTP/1.1 server that records each request's head and answers 404."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buffer += data
                    if b"\r\n\r\n" not in buffer:
                        break
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    self.heads.append(head)
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


async def _fetch(base_url: str) -> Outcome:
    settings = ApiSettings(base_url=base_url, timeout_seconds=10, max_attempts=1)
    async with ReferralsClient(settings) as client:
        return (await client.fetch_referral(REFERRAL)).outcome


def test_the_environments_proxy_is_sent_the_absolute_url(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set, the request goes to the proxy, naming the API's URL in full."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{recorder.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    asyncio.run(_fetch("http://api.example.invalid/v1.0"))
    request_line = recorder.heads[0].split(b"\r\n")[0]
    expected = f"GET http://api.example.invalid/v1.0/engagements/referrals/{REFERRAL} HTTP/1.1"
    assert expected.encode() == request_line


def test_no_proxy_sends_straight_to_the_api(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host in NO_PROXY is reached directly although HTTP_PROXY is set."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    outcome = asyncio.run(_fetch(f"http://127.0.0.1:{recorder.port}/v1.0"))
    assert outcome == Outcome.NOT_FOUND


def test_every_request_carries_the_fixed_headers(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accept, Accept-Encoding, User-Agent and Host are on the wire."""
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    asyncio.run(_fetch(f"http://127.0.0.1:{recorder.port}/v1.0"))
    lines = recorder.heads[0].split(b"\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
    expected = {
        b"accept": b"application/json",
        b"accept-encoding": b"gzip, deflate",
        b"user-agent": b"partner-referrals-etl",
        b"host": f"127.0.0.1:{recorder.port}".encode(),
    }
    assert expected == {k: headers.get(k) for k in expected}


class _CountingAuth(httpx.Auth):
    """Token ``old`` first; on a 401, once more with ``new``."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = "Bearer old"
        self.tokens.append("old")
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = "Bearer new"
            self.tokens.append("new")
            yield request


def test_a_401_is_sent_again_with_the_auth_flows_fresh_token() -> None:
    """The auth flow's second request is sent, and its answer is the result."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer old":
            return httpx.Response(401)
        return httpx.Response(404)

    async def fetch() -> Outcome:
        settings = ApiSettings(base_url="https://api.test/v1.0", max_attempts=1)
        client = ReferralsClient(settings, _CountingAuth(), httpx.MockTransport(handler))
        async with client:
            return (await client.fetch_referral(REFERRAL)).outcome

    outcome = asyncio.run(fetch())
    assert (outcome, seen) == (Outcome.NOT_FOUND, ["Bearer old", "Bearer new"])
