"""MSAL applications for this job, and what their failures mean.

:func:`build_app` makes a public (device code) or confidential (refresh token) client with
``auth.ca_bundle`` applied to every request. :func:`call` runs one MSAL call and sorts its
failures: the identity provider could not be reached (DNS, refused or reset connection, timeout,
a 5xx or 429 answer) is an :class:`~etl.auth.retry.Outage`, retried by the caller; an untrusted
certificate or an unreadable tenant configuration is an :class:`~etl.errors.AuthError`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import msal
import requests
import urllib3

from etl.auth.credentials import authority_of, client_credential
from etl.auth.explain import discovery_error, tls_error
from etl.auth.retry import Outage
from etl.auth.tokens import Token
from etl.config import AuthSettings, Settings
from etl.errors import AuthError

log = logging.getLogger(__name__)

_DEFAULT_EXPIRES_IN = 300.0
_HTTP_STATUS = re.compile(r"HTTP Error: (\d{3})")


class _IdpHttpClient:
    """The HTTP client MSAL uses: requests, with ``auth.ca_bundle`` applied to every request.

    MSAL's own ``verify=`` sets ``Session.verify``, which requests lets ``REQUESTS_CA_BUNDLE``
    override; passing ``verify`` per request makes a configured CA bundle always win. A 5xx or
    429 answer raises ``requests.HTTPError``, an outage. It never retries by itself (urllib3
    would, and log a warning): :class:`~etl.auth.retry.Retry` does, with backoff, around the
    whole MSAL call.
    """

    def __init__(self, ca_bundle: str, timeout: float) -> None:
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._verify = ca_bundle
        self._timeout = timeout

    def _send(self, method: str, url: str, kwargs: dict[str, Any]) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        if self._verify:
            kwargs["verify"] = self._verify
        response = self._session.request(method, url, **kwargs)
        if response.status_code >= 500 or response.status_code == 429:
            # An outage, whatever the body says: raised here, before MSAL parses (or keeps) it.
            response.raise_for_status()
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("GET", url, kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("POST", url, kwargs)

    def close(self) -> None:
        self._session.close()


def build_app(
    settings: Settings, cache: msal.SerializableTokenCache, *, public: bool
) -> msal.ClientApplication:
    """A new MSAL application (it reads the tenant's OpenID configuration: a request)."""
    auth = settings.auth
    common: dict[str, Any] = {
        "authority": authority_of(auth),
        "validate_authority": auth.instance_discovery,
        "instance_discovery": auth.instance_discovery,
        "token_cache": cache,
        "http_client": _IdpHttpClient(auth.ca_bundle, settings.api.timeout_seconds),
    }
    try:
        if public:
            return call(auth, msal.PublicClientApplication, auth.client_id, **common)
        return call(
            auth,
            msal.ConfidentialClientApplication,
            auth.client_id,
            client_credential=client_credential(auth),
            **common,
        )
    except ValueError as exc:  # MSAL's word for an unreadable tenant configuration
        raise discovery_error(auth, exc) from None


def call(settings: AuthSettings, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call MSAL; an unreachable identity provider becomes an :class:`Outage`."""
    try:
        return func(*args, **kwargs)
    except requests.exceptions.SSLError as exc:
        raise tls_error(settings, exc) from None
    except requests.RequestException as exc:
        log.info("identity provider request failed", exc_info=exc)
        raise Outage(_reason(exc)) from None
    except msal.exceptions.MsalServiceError as exc:
        # MSAL raises it for an HTTP error it does not parse (5xx and 429 are raised earlier,
        # by _IdpHttpClient, so that MSAL's ThrottledHttpClient never replays them).
        found = _HTTP_STATUS.search(str(exc))
        status = int(found.group(1)) if found else 0
        if status >= 500 or status == 429:
            raise Outage(f"HTTP {status}") from None
        raise AuthError(
            f"the identity provider {settings.authority_host} answered "
            f"{f'HTTP {status}' if status else 'with an error'}: check auth.authority_host "
            "and auth.tenant_id"
        ) from None


def _reason(exc: requests.RequestException) -> str:
    """What went wrong below OAuth, in a few words (no URL, no body)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, requests.Timeout):
        return "timed out waiting for the answer"
    for cause in _chain(exc):
        if isinstance(cause, urllib3.exceptions.NameResolutionError):
            return "its name could not be resolved"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
    return f"connection failed: {exc.__class__.__name__}"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes, contexts, reasons and arguments (requests nests them)."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        reason = getattr(current, "reason", None)
        nested = [*current.args, reason, current.__cause__, current.__context__]
        pending.extend(e for e in nested if isinstance(e, BaseException))
    return seen


def keep_only(app: msal.ClientApplication, result: Mapping[str, Any]) -> None:
    """After a fresh sign-in, forget every other account: one cache, one identity."""
    claims = result.get("id_token_claims") or {}
    oid = claims.get("oid") or claims.get("sub")
    for account in app.get_accounts():
        if oid is not None and account.get("local_account_id") != oid:
            log.info("removing the previous account %s from the token cache", account["username"])
            app.remove_account(account)


def token_of(result: Mapping[str, Any]) -> Token:
    try:
        expires_in = float(result.get("expires_in", _DEFAULT_EXPIRES_IN))
    except (TypeError, ValueError):
        expires_in = _DEFAULT_EXPIRES_IN
    return Token(str(result["access_token"]), time.time() + expires_in)
