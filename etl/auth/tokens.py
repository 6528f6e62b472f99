"""What a token is, who hands them out, and the one path for a token given from elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from etl.config import AuthSettings, env_name
from etl.errors import AuthError, ConfigError
from etl.redact import remember


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
                f"it: set a fresh {env_name('auth', 'access_token')}, or use auth.mode "
                "refresh_token"
            )
        return self._token


def given_token(settings: AuthSettings) -> StaticTokenProvider:
    """The provider for mode ``access_token`` (the token must be set)."""
    if settings.access_token is None:
        raise ConfigError(
            "auth.mode is access_token but no token is set: set "
            f"{env_name('auth', 'access_token')} (or auth.access_token_file)"
        )
    return StaticTokenProvider(settings.access_token.reveal())
