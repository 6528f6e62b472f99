"""A small HTTP/1.1 client transport for httpx over asyncio streams: the job's GETs, kept alive.

The job sends one kind of request (GET, no body, a few headers) to one host, many thousand times
a run. aiohttp under httpx (``httpx_aiohttp``) spent ~0.4 ms of CPU on each, most of it in the
layers between the two libraries' request and response objects; this transport writes the
request head itself and reads the answer with :class:`asyncio.StreamReader` (bench/README.md
has the profile). It is an ``httpx.AsyncBaseTransport``: the client, its auth flow and its tests
see httpx's ``Request`` and ``Response`` as before.

What it does, and no more: keep-alive connections per host (a stale one, closed by the server
while idle, is replaced once, transparently: the request is a GET), TLS with httpx's default
context (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), bodies framed by ``Content-Length``,
chunked transfer coding or the end of the connection, answer heads of at most 64 KiB, 1xx
answers skipped. Anything else a server sends (a broken status line or header, a bad chunk
size, a connection closed too early) is an ``httpx.RemoteProtocolError`` or
``httpx.ReadError`` for that request, which the client retries like any transport failure.
Deadlines are the caller's (the client wraps each exchange, body included, in one
``asyncio.timeout``). Proxies are not spoken here: :func:`etl.transport.connections` uses
aiohttp's transport when the environment names one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpx

_HEAD_LIMIT = 65536  # bytes of an answer's status line and headers, at most
_READ = 65536  # bytes read at a time from a body
_NO_BODY = frozenset({204, 304})
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Connection:
    """One TCP (or TLS) connection; ``reader`` with the head limit."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class Http11Transport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections; at most ``max_idle`` idle ones kept per host."""

    def __init__(self, max_idle: int = 16) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._max_idle = max_idle
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the URL's scheme {scheme!r} is not http or https")
        port = url.port or (443 if scheme == "https" else 80)
        key = (scheme, url.host, port)
        head = _request_head(request)
        idle = self._idle.get(key)
        while True:
            reused = bool(idle)
            connection = idle.pop() if idle else await self._open(key)
            try:
                connection.writer.write(head)
                status, reason, headers, version = await _read_answer_head(connection.reader)
            except _StaleConnectionError:
                connection.close()
                if reused:
                    continue  # the server closed it while it was idle: a GET goes again
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without answering"
                ) from None
            except BaseException:
                connection.close()
                raise
            break
        try:
            body = _Body(self, key, connection, request.method, status, headers, version)
        except BaseException:
            connection.close()
            raise
        return httpx.Response(
            status,
            headers=headers,
            stream=body,
            request=request,
            extensions={"http_version": version, "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _release(self, key: tuple[str, str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self._max_idle and not connection.writer.is_closing():
            idle.append(connection)
        else:
            connection.close()

    async def _open(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            tls = self._ssl
        try:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
                limit=_HEAD_LIMIT,
            )
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{exc.__class__.__name__}: {exc}") from exc
        return _Connection(reader, writer)


class _StaleConnectionError(Exception):
    """The connection ended before a single byte of an answer."""


def _request_head(request: httpx.Request) -> bytes:
    """``GET /path?query HTTP/1.1`` and the headers (httpx's Request already set Host)."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            raise httpx.LocalProtocolError("a header holds a line break; not sent")
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


async def _read_answer_head(
    reader: asyncio.StreamReader,
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    """Status, reason, headers and version of the first final (non-1xx) answer."""
    first = True
    while True:
        try:
            block = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if first and not exc.partial:
                raise _StaleConnectionError from None
            raise httpx.RemoteProtocolError(
                "the server closed the connection in the middle of an answer's head"
            ) from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError(
                f"the answer's head is longer than {_HEAD_LIMIT} bytes"
            ) from None
        except OSError as exc:
            if first:
                raise _StaleConnectionError from None
            raise httpx.ReadError(f"{exc.__class__.__name__}: {exc}") from exc
        first = False
        status, reason, headers, version = _parse_head(block)
        if status >= 200 or status == 101:
            return status, reason, headers, version


def _parse_head(block: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    lines = block[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name):
            raise httpx.RemoteProtocolError(f"not a header line: {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return int(code), reason, headers, version


class _Body(httpx.AsyncByteStream):
    """The answer's body as it arrives; the connection goes back to the pool once it is all
    read, and is closed if the body is left unread or broken."""

    def __init__(
        self,
        transport: Http11Transport,
        key: tuple[str, str, int],
        connection: _Connection,
        method: str,
        status: int,
        headers: list[tuple[bytes, bytes]],
        version: bytes,
    ) -> None:
        self._transport = transport
        self._key = key
        self._connection: _Connection | None = connection
        self._length: int | None = None
        self._chunked = False
        self._keep_alive = version == b"HTTP/1.1"
        lengths = set()
        codings = b""
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                lengths.add(value)
            elif lower == b"transfer-encoding":
                codings = value.lower()
            elif lower == b"connection" and b"close" in value.lower():
                self._keep_alive = False
        if method == "HEAD" or status in _NO_BODY or status < 200:
            self._length = 0
        elif codings:
            self._chunked = codings.rsplit(b",", 1)[-1].strip() == b"chunked"
            if not self._chunked:
                self._keep_alive = False  # read to the end of the connection
        elif lengths:
            if len(lengths) > 1 or not next(iter(lengths)).isdigit():
                raise httpx.RemoteProtocolError(f"a bad Content-Length: {sorted(lengths)!r}")
            self._length = int(next(iter(lengths)))
        else:
            self._keep_alive = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamConsumed
        reader = connection.reader
        try:
            if self._chunked:
                async for chunk in _chunks(reader):
                    yield chunk
            elif self._length is not None:
                left = self._length
                while left > 0:
                    data = await reader.read(min(left, _READ))
                    if not data:
                        raise httpx.RemoteProtocolError(
                            f"the server closed the connection {left} bytes before the body's end"
                        )
                    left -= len(data)
                    yield data
            else:
                while data := await reader.read(_READ):
                    yield data
        except OSError as exc:
            raise httpx.ReadError(f"{exc.__class__.__name__}: {exc}") from exc
        self._connection = None
        if self._keep_alive:
            self._transport._release(self._key, connection)  # noqa: SLF001 - its own pool
        else:
            connection.close()

    async def aclose(self) -> None:
        if self._connection is not None:  # left unread or broken: the connection cannot be reused
            self._connection.close()
            self._connection = None


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The chunked transfer coding's data; trailers read and dropped."""
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise httpx.RemoteProtocolError("a broken chunk size line") from None
        size_text = line[:-2].partition(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(f"a bad chunk size: {size_text[:40]!r}") from None
        if size < 0 or size_text[:1] in (b"-", b"+"):
            raise httpx.RemoteProtocolError(f"a bad chunk size: {size_text[:40]!r}")
        if size == 0:
            while True:  # trailers, up to the empty line
                try:
                    if await reader.readuntil(b"\r\n") == b"\r\n":
                        return
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    raise httpx.RemoteProtocolError(
                        "broken trailers after the last chunk"
                    ) from None
        left = size
        while left > 0:
            data = await reader.read(min(left, _READ))
            if not data:
                raise httpx.RemoteProtocolError("the server closed the connection inside a chunk")
            left -= len(data)
            yield data
        try:
            end = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            end = b""
        if end != b"\r\n":
            raise httpx.RemoteProtocolError("a chunk does not end with CRLF")
