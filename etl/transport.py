"""How one request reaches the API: httpx's interface, driven without httpx's client.

:class:`Sender` builds an ``httpx.Request``, runs the ``httpx.Auth`` flow (a 401 may make it
send again with a fresh token) and hands the request to an ``httpx.AsyncBaseTransport``: by
default the job's own keep-alive HTTP/1.1 connections (:mod:`etl.http11`), or aiohttp's
(``httpx_aiohttp``) when the environment names a proxy; in the tests and the demo whatever they
pass (``httpx.MockTransport``, the sandbox in process). ``httpx.AsyncClient``'s own layer (base
URL and header merging, a cookie jar read on every answer, redirects, event hooks) cost ~0.3 ms
of CPU a request for features this API does not use, and aiohttp under httpx another ~0.4 ms;
httpx's own pool (httpcore + anyio) ~1.2 ms (bench/README.md). What the client layer used to do
that matters is done here: the environment's proxy, the fixed headers, the auth flow
(tests/test_client_wire.py).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx

from etl.http11 import Http11Transport

log = logging.getLogger(__name__)

# Sent with every request (httpx's client sent the same, Accept-Encoding included: an answer
# compressed by the server is decoded as it is read).
HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "User-Agent": "partner-referrals-etl",
}


def connections(base_url: str, concurrency: int) -> httpx.AsyncBaseTransport:
    """Connections to the API, kept alive (``concurrency`` of them idle at most): the job's own
    HTTP/1.1 transport, or aiohttp's through the proxy the environment names for the API's scheme
    (``HTTPS_PROXY``/``HTTP_PROXY``, ``ALL_PROXY``, and ``NO_PROXY``), as httpx's client would."""
    where = urlsplit(base_url)
    proxies = getproxies()
    proxy = proxies.get(where.scheme) or proxies.get("all")
    if proxy and proxy_bypass(where.hostname or ""):
        proxy = None
    if not proxy:
        return Http11Transport(max_idle=concurrency)
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return AiohttpTransport(limits=limits, proxy=httpx.Proxy(proxy))


class Sender:
    """GET requests through an optional auth flow and one transport (closed with the sender)."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport, auth: httpx.Auth | None, timeout: float
    ) -> None:
        self._transport = transport
        self._auth = auth
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}

    async def get(
        self, url: str, headers: dict[str, str], params: list[tuple[str, Any]] | None = None
    ) -> httpx.Response:
        """Send a GET; the answer's body is left to stream (the caller closes the response)."""
        request = httpx.Request(
            "GET", url, params=params, headers={**HEADERS, **headers}, extensions=self._extensions
        )
        if self._auth is None:
            return self._logged(await self._roundtrip(request))
        flow = self._auth.async_auth_flow(request)
        try:
            request = await flow.__anext__()
            while True:
                response = await self._roundtrip(request)
                try:
                    if self._auth.requires_response_body:
                        await response.aread()
                    request = await flow.asend(response)
                except StopAsyncIteration:
                    return self._logged(response)
                except BaseException:
                    await response.aclose()
                    raise
                await response.aclose()  # the flow sends again: this answer is done with
        finally:
            await flow.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    @staticmethod
    def _logged(response: httpx.Response) -> httpx.Response:
        """One debug line per request, as httpx's client wrote (seen at ``-vv``)."""
        if log.isEnabledFor(logging.DEBUG):
            request = response.request
            log.debug(
                'HTTP Request: %s %s "%d %s"',
                request.method,
                request.url,
                response.status_code,
                response.reason_phrase,
            )
        return response

    async def _roundtrip(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response
