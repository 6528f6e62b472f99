"""Errors from the identity provider, explained: one line with the AADSTS code and what to do.

Messages never contain a token, a secret, or MSAL's error dictionary.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from etl.auth.credentials import authority_of, secrets_of
from etl.config import AuthSettings, env_name
from etl.errors import AuthError
from etl.logs import mask

log = logging.getLogger(__name__)

LOGIN = "run `referrals-etl auth login`"

# AADSTS codes -> what they mean for this job. ``{redo}`` and ``{interactive}`` depend on the mode.
_REFRESH_TOKEN_DEAD = (700082, 70008, 50173, 700084)
_INTERACTION_REQUIRED = (50076, 50079, 53003)
_BAD_SECRET = (7000215, 7000222)


def _explanations(settings: AuthSettings) -> dict[int, str]:
    if settings.mode == "device_code":
        redo = f"sign in again: {LOGIN}"
        interactive = (
            f"{LOGIN} and complete the multi-factor sign-in; check the conditional access "
            "policies that apply to the account"
        )
    else:
        redo = (
            "the integration account must redo the one-time consent (Secure Application Model, "
            f"or {LOGIN} in mode device_code) and the new refresh token must go into "
            f"{env_name('auth', 'refresh_token')} (or auth.refresh_token_file)"
        )
        interactive = (
            "the integration account must redo the one-time consent interactively with "
            "multi-factor authentication, then update "
            f"{env_name('auth', 'refresh_token')}; check the conditional access policies that "
            "apply to it"
        )
    explained = {
        65001: (
            "consent is missing: an administrator must grant admin consent to the app's "
            "Partner Center permission (Entra ID > App registrations > API permissions > "
            "Grant admin consent)"
        ),
        700016: (
            f"application {settings.client_id or '(auth.client_id)'} was not found in tenant "
            f"{settings.tenant_id or '(auth.tenant_id)'}: check auth.client_id and "
            "auth.tenant_id, and that the app is registered or consented in that tenant"
        ),
        90002: (
            f"tenant {settings.tenant_id or '(auth.tenant_id)'} was not found: check "
            "auth.tenant_id (and auth.authority_host for a sovereign cloud)"
        ),
        700027: (
            "the client certificate was not accepted: upload its public certificate to the app "
            "registration (Certificates & secrets) and check auth.client_certificate_path"
        ),
        7000218: (
            "the app registration expects a client credential: for mode device_code turn on "
            "'Allow public client flows' in the app registration (Authentication), or use mode "
            f"refresh_token with {env_name('auth', 'client_secret')}"
        ),
    }
    for code in _REFRESH_TOKEN_DEAD:
        explained[code] = f"the refresh token has expired or was revoked: {redo}"
    for code in _INTERACTION_REQUIRED:
        explained[code] = (
            f"multi-factor authentication or a conditional access policy blocks it: {interactive}"
        )
    for code in _BAD_SECRET:
        explained[code] = (
            "the client secret is wrong or expired: create a new secret in the app registration "
            f"(Certificates & secrets) and set {env_name('auth', 'client_secret')} (or "
            "auth.client_secret_file) to its value, not its id"
        )
    return explained


_AADSTS = re.compile(r"AADSTS(\d+)")


def describe_error(result: Mapping[str, Any], settings: AuthSettings, doing: str) -> str:
    """One line for an MSAL error result: the AADSTS code and what to do (no values echoed)."""
    error = str(result.get("error") or "error")
    description = str(result.get("error_description") or "")
    codes = [int(c) for c in result.get("error_codes") or () if str(c).isdigit()]
    if not codes:
        codes = [int(c) for c in _AADSTS.findall(description)]
    log.info(
        "identity provider answered %s %s (correlation id %s, trace id %s)",
        error,
        ",".join(f"AADSTS{c}" for c in codes) or "without an AADSTS code",
        result.get("correlation_id") or "-",
        result.get("trace_id") or "-",
    )
    explained = _explanations(settings)
    code = next((c for c in codes if c in explained), codes[0] if codes else None)
    if code is not None and code in explained:
        detail = f"AADSTS{code} ({error}): {explained[code]}"
    else:
        first = description.strip().splitlines()[0].strip() if description.strip() else ""
        first = re.sub(r"^AADSTS\d+:\s*", "", first)[:200]
        label = f"AADSTS{code} ({error})" if code is not None else error
        detail = f"{label}: {first}" if first else label
    return scrub(f"{doing} failed: {detail}", settings)


def scrub(text: str, settings: AuthSettings) -> str:
    for value in secrets_of(settings):
        text = text.replace(value, "***")
    return mask(text).replace("\r", " ").replace("\n", " ")


def tls_error(settings: AuthSettings, exc: BaseException) -> AuthError:
    """The identity provider's certificate was not trusted: a set-up problem, not an outage."""
    log.info("TLS with the identity provider failed", exc_info=exc)
    return AuthError(
        f"could not verify the certificate of the identity provider {settings.authority_host}: "
        "check auth.authority_host and auth.ca_bundle (or the proxy that intercepts TLS)"
    )


def discovery_error(settings: AuthSettings, exc: ValueError) -> AuthError:
    """MSAL raises ValueError when the tenant's OpenID configuration cannot be read."""
    text = str(exc)
    # MSAL re-raises the discovery failure; the identity provider's answer is in the context.
    codes = _AADSTS.findall(f"{exc.__cause__ or ''} {exc.__context__ or ''} {text}")
    if codes:
        return AuthError(
            describe_error(
                {"error": "invalid_tenant", "error_codes": [int(codes[0])]},
                settings,
                f"reading the configuration of {authority_of(settings)}",
            )
        )
    log.info("authority discovery failed: %s", scrub(text, settings))
    return AuthError(
        f"could not read the OpenID configuration of {authority_of(settings)}: check "
        "auth.tenant_id and auth.authority_host (turn off auth.instance_discovery for a "
        "private or sovereign authority)"
    )
