"""``build_auth``: the ``httpx.Auth`` for the configured ``auth.mode``."""

from __future__ import annotations

from etl.auth.bearer import BearerAuth
from etl.auth.tokens import given_token
from etl.config import Settings
from etl.stopping import StopRequest


def build_auth(settings: Settings, stop: StopRequest | None = None) -> BearerAuth:
    """Mode ``access_token`` needs no MSAL; the other modes import it only here.

    ``stop`` ends the waits between retries of an unreachable identity provider early.
    """
    if settings.auth.mode == "access_token":
        return BearerAuth(given_token(settings.auth))
    from etl.auth.provider import MsalTokenProvider, retry_for

    return BearerAuth(MsalTokenProvider(settings, retry_for(settings, stop)))
