"""The client's HTTP/1.1 transport (etl/http11.py) against a scripted server on a real socket.

Each test's server answers the requests of one connection with the raw bytes it is given (one
answer per request head read), so what is asserted is what the transport makes of exactly those
bytes: the body, the error, and whether the connection was kept or replaced.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trustme

from etl.http11 import Http11Transport

Answers = list[list[bytes]]  # per connection, the answer to each request (b"" = close instead)


class Script:
    """A server whose n-th connection answers with ``answers[n]``, then closes."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.connections = 0
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mine = self.answers[self.connections] if self.connections < len(self.answers) else []
        self.connections += 1
        try:
            for answer in mine:
                self.heads.append(await reader.readuntil(b"\r\n\r\n"))
                if not answer:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _with_server(
    answers: Answers,
    body: Callable[[Http11Transport, str, Script], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> Script:
    script = Script(answers)
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    transport = Http11Transport()
    scheme = "https" if tls else "http"
    host = "localhost" if tls else "127.0.0.1"
    try:
        await body(transport, f"{scheme}://{host}:{port}", script)
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
    return script


async def _get(transport: Http11Transport, url: str) -> tuple[int, bytes]:
    request = httpx.Request("GET", url + "/v1.0/engagements/referrals/x?a=1")
    response = await transport.handle_async_request(request)
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


def _run(
    answers: Answers, body: Callable[[Http11Transport, str, Script], Awaitable[None]]
) -> Script:
    return asyncio.run(_with_server(answers, body))


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def test_a_content_length_body_is_read_whole() -> None:
    """A body framed by Content-Length comes back as sent."""
    got: list[tuple[int, bytes]] = []

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        got.append(await _get(transport, url))

    _run([[OK]], body)
    assert got == [(200, b"hello")]


def test_the_request_head_is_a_get_of_the_path_and_query_with_host() -> None:
    """GET, the path with its query, HTTP/1.1, and a Host header."""

    urls: list[str] = []

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        urls.append(url)
        await _get(transport, url)

    script = _run([[OK]], body)
    host = urls[0].removeprefix("http://").encode()
    expected = [b"GET /v1.0/engagements/referrals/x?a=1 HTTP/1.1", b"Host: " + host]
    assert script.heads[0].split(b"\r\n")[:2] == expected


def test_two_requests_share_one_kept_alive_connection() -> None:
    """The second GET goes over the first one's connection."""

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        await _get(transport, url)
        await _get(transport, url)

    script = _run([[OK, OK]], body)
    assert script.connections == 1


def test_a_connection_closed_while_idle_is_replaced_transparently() -> None:
    """The server closes the kept connection; the next GET opens another and succeeds."""
    got: list[tuple[int, bytes]] = []

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        await _get(transport, url)
        got.append(await _get(transport, url))

    script = _run([[OK, b""], [OK]], body)
    assert (got, script.connections) == ([(200, b"hello")], 2)


def test_a_chunked_body_is_decoded_and_its_trailers_dropped() -> None:
    """Chunks with extensions and a trailer give the data alone."""
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    got: list[tuple[int, bytes]] = []

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        got.append(await _get(transport, url))
        got.append(await _get(transport, url))  # the connection is usable after it

    script = _run([[answer, OK]], body)
    assert (got, script.connections) == ([(200, b"hello world"), (200, b"hello")], 1)


def test_a_body_without_length_is_read_to_the_connections_end() -> None:
    """No Content-Length and no chunking: the body is what comes until the server closes."""
    got: list[tuple[int, bytes]] = []

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        got.append(await _get(transport, url))

    _run([[b"HTTP/1.1 200 OK\r\n\r\nuntil the end"]], body)
    assert got == [(200, b"until the end")]


def test_a_1xx_answer_is_skipped() -> None:
    """100 Continue, then the real answer."""
    got: list[tuple[int, bytes]] = []

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        got.append(await _get(transport, url))

    _run([[b"HTTP/1.1 100 Continue\r\n\r\n" + OK]], body)
    assert got == [(200, b"hello")]


def test_a_304_has_no_body_and_keeps_the_connection() -> None:
    """304 with a Content-Length header still has no body."""

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        assert await _get(transport, url) == (304, b"")
        await _get(transport, url)

    script = _run([[b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", OK]], body)
    assert script.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTX/1.1 200 OK\r\n\r\n", id="bad-version"),
        pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", id="bad-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", id="bad-header"),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", id="space-in-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            id="two-lengths",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", id="huge-head"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", id="short-body"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk-size"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX", id="chunk-end"
        ),
        pytest.param(b"HTTP/1.1 200", id="cut-head"),
    ],
)
def test_bytes_that_are_not_http_are_a_protocol_error(answer: bytes) -> None:
    """Whatever the server sends, the request ends with an httpx transport error."""
    raised: list[BaseException] = []

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        try:
            await _get(transport, url)
        except httpx.TransportError as exc:
            raised.append(exc)

    _run([[answer]], body)
    assert [isinstance(e, httpx.RemoteProtocolError | httpx.ReadError) for e in raised] == [True]


def test_a_server_that_answers_nothing_on_a_new_connection_is_an_error() -> None:
    """A fresh connection closed without an answer is not retried: RemoteProtocolError."""

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await _get(transport, url)

    script = _run([[b""]], body)
    assert script.connections == 1


def test_a_body_left_unread_closes_its_connection() -> None:
    """A response closed before its body was read is not reused: the next GET reconnects."""

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        response = await transport.handle_async_request(httpx.Request("GET", url + "/"))
        await response.aclose()
        await _get(transport, url)

    script = _run([[OK, OK], [OK]], body)
    assert script.connections == 2


def test_nothing_listening_is_a_connect_error() -> None:
    """A refused connection is httpx.ConnectError."""

    async def fetch() -> None:
        transport = Http11Transport()
        try:
            await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/"))
        finally:
            await transport.aclose()

    with pytest.raises(httpx.ConnectError):
        asyncio.run(fetch())


def test_a_header_with_a_line_break_is_not_sent() -> None:
    """A header value holding CR/LF raises before anything is written."""

    async def fetch() -> None:
        transport = Http11Transport()
        request = httpx.Request("GET", "http://127.0.0.1:9/", headers={"X": "a\r\nInjected: 1"})
        try:
            await transport.handle_async_request(request)
        finally:
            await transport.aclose()

    with pytest.raises(httpx.LocalProtocolError):
        asyncio.run(fetch())


def test_https_is_verified_against_the_ca_bundle_named_by_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose certificate chains to SSL_CERT_FILE's CA is reached over TLS."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    got: list[tuple[int, bytes]] = []

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        got.append(await _get(transport, url))

    asyncio.run(_with_server([[OK]], body, tls=server_tls))
    assert got == [(200, b"hello")]


def test_https_to_an_unknown_ca_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A certificate no trusted CA signed is refused: httpx.ConnectError."""
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(server_tls)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    async def body(transport: Http11Transport, url: str, _script: Script) -> None:
        with pytest.raises(httpx.ConnectError):
            await _get(transport, url)

    asyncio.run(_with_server([[OK]], body, tls=server_tls))
