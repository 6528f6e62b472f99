"""Bearer tokens for the Referrals API: ``build_auth(settings)`` gives the ``httpx.Auth``.

One module per concern; each imports only modules above it in this list. Only cache_file,
msal_app, provider and commands import MSAL: importing this package does not, ``build_auth``
imports it for the modes that need it::

    tokens       Token, TokenProvider, StaticTokenProvider, given_token (mode access_token)
    bearer       BearerAuth: tokens on requests, one forced refresh on a 401
    retry        identity-provider outages: Outage, Retry (backoff, then exit 4)
    credentials  the [auth] settings checked: scopes, authority, client secret or certificate
    explain      AADSTS codes explained in one line; secrets scrubbed
    cache_file   the token cache file: 0600, atomic writes under a lock
    msal_app     MSAL applications, and their failures sorted (outage or rejection)
    provider     MsalTokenProvider: modes refresh_token and device_code
    commands     the logic of `auth login`, `auth status`, `auth logout`
    build        build_auth: the provider for auth.mode (imports provider when it needs it)
"""

from __future__ import annotations

from etl.auth.bearer import BearerAuth
from etl.auth.build import build_auth
from etl.auth.tokens import StaticTokenProvider, Token, TokenProvider

__all__ = ["BearerAuth", "StaticTokenProvider", "Token", "TokenProvider", "build_auth"]
