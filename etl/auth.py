"""Bearer tokens for the Referrals API, as an ``httpx.Auth``.

A :class:`TokenProvider` hands out access tokens; :class:`BearerAuth` puts them on requests,
caches them until shortly before they expire, and on a 401 forces one refresh and retries the
request once. A second 401 (or a refresh that fails) is an :class:`AuthError` (exit 3).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import Protocol

import httpx

from etl.config import Settings
from etl.errors import AuthError, ConfigError
from etl.redact import remember

_EARLY = 120.0  # renew a token this many seconds before it expires


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # time.time() seconds

    def __post_init__(self) -> None:
        remember(self.value)  # masked wherever a server echoes it (logs, database, status)

    def __repr__(self) -> str:
        return f"Token(expires_at={self.expires_at:.0f})"


class TokenProvider(Protocol):
    def get_token(self, force_refresh: bool = False) -> Token:
        """A valid access token; ``force_refresh`` skips any cached access token."""
        ...


class StaticTokenProvider:
    """Mode ``access_token``: a bearer token obtained elsewhere; it cannot be refreshed."""

    def __init__(self, token: str) -> None:
        self._token = Token(token, float("inf"))

    def get_token(self, force_refresh: bool = False) -> Token:
        if force_refresh:
            raise AuthError(
                "the API rejected the access token (401) and mode access_token cannot refresh "
                "it: set a fresh REFERRALS_ETL_AUTH_ACCESS_TOKEN, or use auth.mode refresh_token"
            )
        return self._token


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


def build_auth(settings: Settings) -> BearerAuth:
    """The ``httpx.Auth`` for the configured ``auth.mode``."""
    auth = settings.auth
    if auth.mode == "access_token":
        if auth.access_token is None:
            raise ConfigError(
                "auth.mode is access_token but no token is set: set "
                "REFERRALS_ETL_AUTH_ACCESS_TOKEN (or auth.access_token_file)"
            )
        return BearerAuth(StaticTokenProvider(auth.access_token.reveal()))
    from etl.msal_auth import msal_provider

    return BearerAuth(msal_provider(settings))
