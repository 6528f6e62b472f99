"""The logic of ``referrals-etl auth login``, ``auth status`` and ``auth logout``.

``login`` signs in (device code flow, mode device_code) or redeems the configured refresh token
once (mode refresh_token) and replaces the token cache; ``describe_status`` says who is signed
in, until when, and where the cache is, never a token; ``logout`` empties the cache, even when
the identity provider cannot be reached. The CLI prints what these return.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msal

from etl.auth.cache_file import CacheFile, cached_accounts
from etl.auth.credentials import authority_of, check_common, scopes_of
from etl.auth.explain import LOGIN, describe_error
from etl.auth.msal_app import build_app, call
from etl.auth.provider import retry_for
from etl.auth.retry import Outage, Retry
from etl.config import AuthSettings, Settings, env_name
from etl.errors import AuthError, ConfigError

log = logging.getLogger(__name__)


def login(settings: Settings, echo: Callable[[str], Any], retry: Retry | None = None) -> None:
    """``auth login``: device code sign-in (mode device_code), or a first redemption of the
    configured refresh token (mode refresh_token); the new cache replaces the old one.

    Reaching the identity provider is retried like a run's token requests; waiting for the
    person to sign in is not (an outage then ends the sign-in, exit 4)."""
    auth = settings.auth
    retry = retry or retry_for(settings)
    if auth.mode == "access_token":
        raise ConfigError(
            "auth.mode access_token has no sign-in: it uses the bearer token in "
            f"{env_name('auth', 'access_token')}; set auth.mode to device_code to sign in here"
        )
    check_common(auth)
    scopes = scopes_of(auth)
    store = CacheFile(auth.token_cache_path)
    store.ensure_directory()
    cache = msal.SerializableTokenCache()  # a fresh cache: this sign-in replaces the last one
    if auth.mode == "refresh_token":
        if auth.refresh_token is None:
            raise ConfigError(
                "auth.mode refresh_token signs in with the refresh token of the one-time consent: "
                f"set {env_name('auth', 'refresh_token')} (or auth.refresh_token_file), or set "
                "auth.mode to device_code to sign in here with a code"
            )
        token = auth.refresh_token.reveal()

        def redeem() -> Any:
            app = build_app(settings, cache, public=False)
            return call(auth, app.acquire_token_by_refresh_token, token, scopes)

        result = retry.call(redeem)
        if "access_token" not in result:
            raise AuthError(describe_error(result, auth, "redeeming the refresh token"))
    else:
        result = _device_flow(settings, cache, scopes, echo, retry)
    with store.locked():
        store.save(cache, force=True)
    claims = result.get("id_token_claims") or {}
    who = claims.get("preferred_username") or claims.get("upn") or "the account"
    echo(f"signed in as {who} (tenant {claims.get('tid', auth.tenant_id)})")
    echo(f"token cache: {store.path} (mode 0600)")


def _device_flow(
    settings: Settings,
    cache: msal.SerializableTokenCache,
    scopes: list[str],
    echo: Callable[[str], Any],
    retry: Retry,
) -> Mapping[str, Any]:
    auth = settings.auth

    def start() -> tuple[msal.ClientApplication, Any]:
        app = build_app(settings, cache, public=True)
        return app, call(auth, app.initiate_device_flow, scopes=scopes)

    app, flow = retry.call(start)
    if "user_code" not in flow:
        raise AuthError(describe_error(flow, auth, "starting the device code sign-in"))
    minutes = max(1, round(int(flow.get("expires_in", 900)) / 60))
    echo(
        f"To sign in, open {flow['verification_uri']} in a browser and enter the code "
        f"{flow['user_code']}"
    )
    echo(f"waiting for the sign-in (the code expires in {minutes} min; Ctrl-C cancels) ...")
    once = Retry(1, retry.host)  # a new flow would need a new code: no retry while polling
    try:
        result = once.call(lambda: call(auth, app.acquire_token_by_device_flow, flow))
    except KeyboardInterrupt:
        raise AuthError(f"sign-in cancelled; {LOGIN} to try again") from None
    if "access_token" in result:
        return dict(result)
    error = result.get("error")
    if error in ("expired_token", "authorization_pending", "slow_down", "code_expired"):
        raise AuthError(
            f"sign-in failed: the code expired before the sign-in was finished; {LOGIN} again "
            f"and finish within {minutes} min"
        )
    if error == "authorization_declined":
        raise AuthError(f"sign-in failed: it was declined in the browser; {LOGIN} again")
    raise AuthError(describe_error(result, auth, "sign-in"))


def describe_status(settings: Settings) -> str:
    """``auth status``: mode, account, tenant, access token expiry, cache path; never a token."""
    auth = settings.auth
    lines = [f"mode: {auth.mode}"]
    if auth.mode == "access_token":
        lines.append(_static_token_status(auth))
        return "\n".join(lines)
    lines.append(f"authority: {authority_of(auth)}")
    lines.append(f"client id: {auth.client_id or '(not set)'}")
    lines.append(f"scope: {auth.scope}")
    if auth.mode == "refresh_token":
        credential = (
            f"certificate {auth.client_certificate_path}"
            if auth.client_certificate_path
            else "client secret (set)"
            if auth.client_secret is not None
            else f"none: set {env_name('auth', 'client_secret')}"
        )
        lines.append(f"client credential: {credential}")
        lines.append(
            "configured refresh token: " + ("set" if auth.refresh_token is not None else "not set")
        )
    store = CacheFile(auth.token_cache_path)
    cache = store.read()
    accounts = cached_accounts(cache)
    if not store.path.exists():
        lines.append(f"token cache: {store.path} (not created yet)")
    else:
        mode = store.path.stat().st_mode & 0o777
        lines.append(f"token cache: {store.path} (mode {mode:04o})")
    if not accounts:
        hint = (
            LOGIN
            if auth.mode == "device_code"
            else "the next run redeems the configured refresh token"
        )
        lines.append(f"account: none signed in ({hint})")
        return "\n".join(lines)
    now = time.time()
    for account in accounts:
        home = account.get("home_account_id")
        lines.append(
            f"account: {account.get('username') or '(no username)'} "
            f"(tenant {account.get('realm') or '?'})"
        )
        expiries = [
            int(entry.get("expires_on", 0))
            for entry in cache.search(
                msal.TokenCache.CredentialType.ACCESS_TOKEN,
                query={"home_account_id": home, "client_id": auth.client_id},
            )
        ]
        if expiries:
            lines.append(f"access token: {_expiry(max(expiries), now)}")
        else:
            lines.append("access token: none cached")
        refresh = list(
            cache.search(
                msal.TokenCache.CredentialType.REFRESH_TOKEN, query={"home_account_id": home}
            )
        )
        lines.append("refresh token: " + ("cached" if refresh else f"none cached; {LOGIN}"))
    return "\n".join(lines)


def _expiry(expires_on: float, now: float) -> str:
    when = datetime.fromtimestamp(expires_on, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    left = expires_on - now
    if left <= 0:
        return f"expired at {when} (a new one is fetched when needed)"
    return f"valid until {when} (in {int(left // 60)} min)"


def _static_token_status(auth: AuthSettings) -> str:
    if auth.access_token is None:
        return f"access token: not set ({env_name('auth', 'access_token')})"
    claims = _jwt_claims(auth.access_token.reveal())
    parts = ["access token: set"]
    who = claims.get("upn") or claims.get("unique_name") or claims.get("preferred_username")
    if who:
        parts.append(f"for {who}")
    if claims.get("tid"):
        parts.append(f"(tenant {claims['tid']})")
    if isinstance(claims.get("exp"), int | float):
        parts.append(_expiry(float(claims["exp"]), time.time()))
    else:
        parts.append("(expiry unknown: not a JWT)")
    return " ".join(parts)


def _jwt_claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def logout(settings: Settings) -> str:
    """``auth logout``: remove every account from the token cache and write it back."""
    auth = settings.auth
    store = CacheFile(auth.token_cache_path)
    if not store.path.exists():
        return f"no token cache at {store.path}: nobody is signed in"
    with store.locked():
        cache = store.read()
        accounts = cached_accounts(cache)
        if not accounts:
            return f"nobody is signed in (token cache {store.path})"
        names = sorted({a.get("username") or "(no username)" for a in accounts})
        try:
            check_common(auth)
            app = build_app(settings, cache, public=True)
            for account in call(auth, app.get_accounts):
                app.remove_account(account)
        except (AuthError, ConfigError, Outage) as exc:
            log.info("removing the accounts without MSAL (%s)", exc)
        if cached_accounts(cache):  # MSAL unusable, or accounts of another authority host
            _forget_offline(cache)
        store.save(cache, force=True)
    message = f"signed out {', '.join(names)}: removed from the token cache {store.path}"
    if auth.mode == "refresh_token" and auth.refresh_token is not None:
        message += (
            f"; the next run redeems {env_name('auth', 'refresh_token')} again (revoke the "
            "integration account's sessions in Entra ID to stop it for good)"
        )
    return message


def _forget_offline(cache: msal.SerializableTokenCache) -> None:
    kinds = msal.TokenCache.CredentialType
    for entry in list(cache.search(kinds.ACCESS_TOKEN)):
        cache.remove_at(entry)
    for entry in list(cache.search(kinds.REFRESH_TOKEN)):
        cache.remove_rt(entry)
    for entry in list(cache.search(kinds.ID_TOKEN)):
        cache.remove_idt(entry)
    for entry in list(cache.search(kinds.ACCOUNT)):
        cache.remove_account(entry)
