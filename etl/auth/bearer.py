"""``BearerAuth``: the ``httpx.Auth`` that puts a provider's tokens on API requests.

It caches a token until shortly before it expires, and on a 401 forces one refresh and retries
the request once. A second 401 (or a refresh that fails) is an :class:`AuthError` (exit 3).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Generator

import httpx

from etl.auth.tokens import Token, TokenProvider
from etl.errors import AuthError

_EARLY = 120.0  # renew a token this many seconds before it expires


class BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer`` from a provider; one forced refresh on a 401."""

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider
        self._token: Token | None = None
        self._lock = threading.Lock()

    def _current(self, force: bool = False, stale: Token | None = None) -> Token:
        with self._lock:
            token = self._token
            if force and token is not None and token is not stale:
                return token  # another request refreshed it meanwhile
            if force or token is None or token.expires_at - _EARLY <= time.time():
                token = self._provider.get_token(force_refresh=force)
                self._token = token
            return token

    def _cached(self) -> Token | None:
        token = self._token
        return token if token is not None and token.expires_at - _EARLY > time.time() else None

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current()
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code == 401:
            token = self._current(force=True, stale=token)
            request.headers["Authorization"] = f"Bearer {token.value}"
            response = yield request
            if response.status_code == 401:
                raise AuthError(_REJECTED)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        cached = self._cached()
        token = cached if cached is not None else await asyncio.to_thread(self._current)
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            token = await asyncio.to_thread(self._current, True, token)
            request.headers["Authorization"] = f"Bearer {token.value}"
            response = yield request
            if response.status_code == 401:
                raise AuthError(_REJECTED)


_REJECTED = (
    "the API rejected a freshly refreshed token (401 twice): check that the app registration "
    "has the Partner Center API permission with admin consent, and auth.scope"
)
