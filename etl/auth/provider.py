"""Tokens from Microsoft Entra ID with MSAL: modes ``refresh_token`` and ``device_code``.

``refresh_token`` (the Secure Application Model, for unattended runs): a confidential client
(client secret, or a certificate from ``auth.client_certificate_path``) redeems the configured
refresh token once, when the token cache holds no account yet; afterwards every token comes from
the persisted token cache through ``acquire_token_silent``, and the cache is written back
whenever it changed, since refresh tokens rotate.

``device_code``: ``referrals-etl auth login`` signs a person in with the device code flow of a
public client and stores the cache; later runs refresh silently from it.

An identity provider that cannot be reached is retried (:mod:`etl.auth.retry`), the attempt
after an outage with a new MSAL application (which reads the tenant's configuration again);
then it is exit 4. A rejection is exit 3 at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import msal

from etl.auth.cache_file import CacheFile, cached_accounts
from etl.auth.credentials import check_common, client_credential, scopes_of
from etl.auth.explain import LOGIN, describe_error
from etl.auth.msal_app import build_app, call, keep_only, token_of
from etl.auth.retry import Outage, Retry
from etl.auth.tokens import Token
from etl.config import Settings, env_name
from etl.errors import AuthError, ConfigError, IdentityProviderUnavailableError
from etl.stopping import StopRequest

log = logging.getLogger(__name__)

_FAILURE_MEMORY = 30.0  # seconds a failed token request is repeated without asking again

# What a failed token request ends with, remembered for _FAILURE_MEMORY seconds.
_FAILURES = (AuthError, ConfigError, IdentityProviderUnavailableError)
_Failure = AuthError | ConfigError | IdentityProviderUnavailableError


def retry_for(settings: Settings, stop: StopRequest | None = None) -> Retry:
    """The API's patience for the identity provider: ``api.max_attempts`` attempts."""
    return Retry(settings.api.max_attempts, settings.auth.authority_host, stop=stop)


class MsalTokenProvider:
    """A :class:`~etl.auth.tokens.TokenProvider` for modes ``refresh_token`` and ``device_code``.

    Thread-safe: one lock serializes every token acquisition and cache write in this process;
    the cache file's lock does the same across processes (it is not held between retries).
    """

    def __init__(self, settings: Settings, retry: Retry | None = None) -> None:
        self._settings = settings
        self._auth = auth = settings.auth
        if auth.mode not in ("refresh_token", "device_code"):
            raise ConfigError(f"auth.mode {auth.mode} does not use MSAL")
        check_common(auth)
        self._scopes = scopes_of(auth)
        self._public = auth.mode == "device_code"
        if not self._public:
            client_credential(auth)  # fail now on a missing or broken credential
        self._retry = retry or retry_for(settings)
        self._file = CacheFile(auth.token_cache_path)
        self._cache = self._file.read()
        if not cached_accounts(self._cache):
            if self._public:
                raise AuthError(
                    f"not signed in: the token cache {self._file.path} holds no account; {LOGIN}"
                )
            if auth.refresh_token is None:
                raise ConfigError(
                    f"auth.mode refresh_token: the token cache {self._file.path} holds no account "
                    f"yet and no refresh token is configured: set "
                    f"{env_name('auth', 'refresh_token')} (or auth.refresh_token_file) to the "
                    "refresh token of the one-time consent"
                )
        self._app: msal.ClientApplication | None = None
        self._lock = threading.Lock()
        self._failure: tuple[float, _Failure] | None = None

    def _application(self) -> msal.ClientApplication:
        if self._app is None:
            self._app = build_app(self._settings, self._cache, public=self._public)
        return self._app

    def get_token(self, force_refresh: bool = False) -> Token:
        with self._lock:
            if self._failure is not None:
                failed_at, error = self._failure
                if time.monotonic() - failed_at < _FAILURE_MEMORY:
                    # Concurrent requests of a failing run: one answer, not one request each.
                    raise type(error)(str(error))
                self._failure = None
            try:
                result = self._retry.call(lambda: self._attempt(force_refresh))
            except _FAILURES as exc:
                self._failure = (time.monotonic(), exc)
                raise
        token = token_of(result)
        log.debug("access token valid for %.0f s", token.expires_at - time.time())
        return token

    def _attempt(self, force_refresh: bool) -> Mapping[str, Any]:
        """One try, under the cache file's lock; an outage discards the MSAL application."""
        with self._file.locked():
            self._file.reload_if_changed(self._cache)
            try:
                return self._acquire(force_refresh)
            except Outage:
                self._app = None
                raise
            finally:
                self._file.save(self._cache)

    def _acquire(self, force_refresh: bool) -> Mapping[str, Any]:
        auth = self._auth
        app = self._application()
        accounts = call(auth, app.get_accounts)
        failure: Mapping[str, Any] | None = None
        if accounts:
            if len(accounts) > 1:
                log.warning(
                    "the token cache %s holds %d accounts; using %s (`referrals-etl auth logout` "
                    "forgets them all)",
                    self._file.path,
                    len(accounts),
                    accounts[0]["username"],
                )
            result = call(
                auth,
                app.acquire_token_silent_with_error,
                self._scopes,
                accounts[0],
                force_refresh=force_refresh,
            )
            if result and "access_token" in result:
                return dict(result)
            failure = result
            if self._public:
                if failure:
                    raise AuthError(describe_error(failure, auth, "refreshing the sign-in"))
                raise AuthError(
                    f"the token cache {self._file.path} holds no usable token for "
                    f"{accounts[0]['username']}; {LOGIN}"
                )
            if auth.refresh_token is None or (failure and failure.get("error") != "invalid_grant"):
                if failure:
                    raise AuthError(describe_error(failure, auth, "refreshing the access token"))
                raise ConfigError(
                    f"the token cache {self._file.path} holds no usable refresh token and none "
                    f"is configured: set {env_name('auth', 'refresh_token')}"
                )
            log.info("the cached refresh token did not work; redeeming the configured one")
        elif self._public:
            raise AuthError(
                f"not signed in: the token cache {self._file.path} holds no account; {LOGIN}"
            )
        if auth.refresh_token is None:
            raise ConfigError(
                f"auth.mode refresh_token needs a refresh token: set "
                f"{env_name('auth', 'refresh_token')} (or auth.refresh_token_file)"
            )
        result = call(
            auth, app.acquire_token_by_refresh_token, auth.refresh_token.reveal(), self._scopes
        )
        if "access_token" not in result:
            # After a failed silent refresh, that first error is the informative one.
            raise AuthError(
                describe_error(failure, auth, "refreshing the access token")
                if failure
                else describe_error(result, auth, "redeeming the refresh token")
            )
        keep_only(app, result)
        log.info(
            "redeemed the configured refresh token for %s",
            (result.get("id_token_claims") or {}).get("preferred_username", "the account"),
        )
        return dict(result)
