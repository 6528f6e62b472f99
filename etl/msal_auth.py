"""Tokens from Microsoft Entra ID with MSAL: modes ``refresh_token`` and ``device_code``.

``refresh_token`` (the Secure Application Model, for unattended runs): a confidential client
(client secret, or a certificate from ``auth.client_certificate_path``) redeems the configured
refresh token once, when the token cache holds no account yet; afterwards every token comes from
the persisted :class:`msal.SerializableTokenCache` through ``acquire_token_silent``, and the
cache is written back whenever it changed, since refresh tokens rotate.

``device_code``: ``referrals-etl auth login`` signs a person in with the device code flow of a
public client and stores the cache; later runs refresh silently from it.

The cache file is written atomically (temporary file in the same directory, then
``os.replace``) with mode 0600, in a directory created with mode 0700, under a lock file so that
concurrent runs sharing the cache do not lose a rotated refresh token.

Errors from the identity provider become one line with the AADSTS code and what to do. Messages
never contain a token, a secret, or MSAL's error dictionary.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msal
import requests
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from etl.auth import StaticTokenProvider, Token, TokenProvider
from etl.config import AuthSettings, Settings, env_name
from etl.errors import AuthError, ConfigError
from etl.logs import mask

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})
_LOGIN = "run `referrals-etl auth login`"
_DEFAULT_EXPIRES_IN = 300.0
_RETRY_PAUSE = 0.5  # seconds before the one retry of a failed connection
_FAILURE_MEMORY = 30.0  # seconds a failed token request is repeated without asking again

# AADSTS codes -> what they mean for this job. ``{redo}`` and ``{interactive}`` depend on the mode.
_REFRESH_TOKEN_DEAD = (700082, 70008, 50173, 700084)
_INTERACTION_REQUIRED = (50076, 50079, 53003)
_BAD_SECRET = (7000215, 7000222)


def _explanations(settings: AuthSettings) -> dict[int, str]:
    if settings.mode == "device_code":
        redo = f"sign in again: {_LOGIN}"
        interactive = (
            f"{_LOGIN} and complete the multi-factor sign-in; check the conditional access "
            "policies that apply to the account"
        )
    else:
        redo = (
            "the integration account must redo the one-time consent (Secure Application Model, "
            f"or {_LOGIN} in mode device_code) and the new refresh token must go into "
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


# -- settings ------------------------------------------------------------------------------------


def scopes_of(settings: AuthSettings) -> list[str]:
    """The configured scopes without the ones MSAL adds itself (it refuses them)."""
    scopes = settings.scope.split()
    dropped = [s for s in scopes if s.lower() in RESERVED_SCOPES]
    if dropped:
        log.warning("auth.scope: ignoring %s (MSAL adds them itself)", ", ".join(dropped))
    kept = [s for s in scopes if s.lower() not in RESERVED_SCOPES]
    if not kept:
        raise ConfigError(
            "auth.scope is empty: set it (REFERRALS_ETL_AUTH_SCOPE) to "
            "https://api.partner.microsoft.com/.default or "
            "https://api.partner.microsoft.com/user_impersonation"
        )
    return kept


def authority_of(settings: AuthSettings) -> str:
    return f"{settings.authority_host.rstrip('/')}/{settings.tenant_id}"


def _require(settings: AuthSettings, key: str, what: str) -> str:
    value = str(getattr(settings, key))
    if not value:
        raise ConfigError(
            f"auth.mode {settings.mode} needs auth.{key} ({what}): set it in the config file "
            f"or {env_name('auth', key)}"
        )
    return value


def _check_common(settings: AuthSettings) -> None:
    _require(settings, "tenant_id", "the Entra ID tenant GUID or domain")
    _require(settings, "client_id", "the application (client) id of the app registration")
    host = urlparse(settings.authority_host)
    if host.scheme != "https" or not host.hostname:
        raise ConfigError(
            f"auth.authority_host must be an https:// URL such as "
            f"https://login.microsoftonline.com, got {settings.authority_host!r}"
        )
    if settings.ca_bundle and not Path(settings.ca_bundle).is_file():
        raise ConfigError(f"auth.ca_bundle: file {settings.ca_bundle} not found")
    scopes_of(settings)


def _client_credential(settings: AuthSettings) -> str | dict[str, str]:
    """The confidential client's credential: a certificate when configured, else the secret."""
    if settings.client_certificate_path:
        return _certificate_credential(settings.client_certificate_path)
    if settings.client_secret is None:
        raise ConfigError(
            "auth.mode refresh_token needs the app's client secret: set "
            f"{env_name('auth', 'client_secret')} (or auth.client_secret_file), or "
            "auth.client_certificate_path"
        )
    return settings.client_secret.reveal()


def _certificate_credential(path: str) -> dict[str, str]:
    """MSAL's credential dict from a PEM file holding the private key and the certificate."""
    where = f"auth.client_certificate_path {path}"
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError(
            f"{where}: the private key is encrypted; store it without a passphrase "
            "(protect the file instead, e.g. as a mounted Kubernetes Secret)"
        ) from None
    except ValueError:
        raise ConfigError(f"{where}: no readable PEM private key in the file") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{where}: Entra ID needs an RSA key, this one is not RSA")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError(f"{where}: no PEM certificate in the file") from None
    if cert.not_valid_after_utc < datetime.now(UTC):
        log.warning(
            "the client certificate in %s expired on %s: upload a new one to the app registration",
            path,
            cert.not_valid_after_utc.date(),
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "private_key": key_pem.decode("ascii"),
        # The SHA-1 thumbprint Entra ID shows for an uploaded certificate.
        "thumbprint": cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
        "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    }


def _secrets_of(settings: AuthSettings) -> list[str]:
    return [
        s.reveal()
        for s in (settings.client_secret, settings.refresh_token, settings.access_token)
        if s is not None and s.reveal()
    ]


# -- errors --------------------------------------------------------------------------------------

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
    return _scrub(f"{doing} failed: {detail}", settings)


def _scrub(text: str, settings: AuthSettings) -> str:
    for value in _secrets_of(settings):
        text = text.replace(value, "***")
    return mask(text).replace("\r", " ").replace("\n", " ")


def _unreachable(settings: AuthSettings, exc: BaseException) -> AuthError:
    log.info("identity provider request failed", exc_info=exc)
    return AuthError(
        f"could not reach the identity provider {settings.authority_host} "
        f"({exc.__class__.__name__}): check auth.authority_host, the network or proxy, "
        "and auth.ca_bundle"
    )


def _discovery_error(settings: AuthSettings, exc: ValueError) -> AuthError:
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
    log.info("authority discovery failed: %s", _scrub(text, settings))
    return AuthError(
        f"could not read the OpenID configuration of {authority_of(settings)}: check "
        "auth.tenant_id and auth.authority_host (turn off auth.instance_discovery for a "
        "private or sovereign authority)"
    )


# -- the cache file ------------------------------------------------------------------------------


class CacheFile:
    """The persisted MSAL token cache: 0600 file, 0700 directory, atomic writes, a lock file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()
        self._stamp: tuple[int, int, int] | None = None

    def _where(self) -> str:
        return f"token cache {self.path}"

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._config_error("read", exc) from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _config_error(self, action: str, exc: OSError) -> ConfigError:
        return ConfigError(
            f"cannot {action} the {self._where()} ({exc.strerror}): auth.token_cache_path "
            f"({env_name('auth', 'token_cache_path')}) must be a file this user can write, on a "
            "persistent volume for scheduled runs"
        )

    def read(self) -> msal.SerializableTokenCache:
        cache = msal.SerializableTokenCache()
        self.load_into(cache)
        return cache

    def load_into(self, cache: msal.SerializableTokenCache) -> None:
        stamp = self._stat()
        text = ""
        if stamp is not None:
            try:
                text = self.path.read_text(encoding="utf-8")
                mode = self.path.stat().st_mode & 0o777
            except OSError as exc:
                raise self._config_error("read", exc) from None
            if mode & 0o077:
                log.warning(
                    "%s is readable by other users (mode %03o); it is rewritten with mode 0600 "
                    "when tokens are next refreshed",
                    self._where(),
                    mode,
                )
        try:
            cache.deserialize(text or None)
        except ValueError:
            raise AuthError(
                f"the {self._where()} is not valid: delete it, then rerun (mode device_code: "
                f"{_LOGIN} again)"
            ) from None
        self._stamp = stamp

    def reload_if_changed(self, cache: msal.SerializableTokenCache) -> None:
        """Take in what another process wrote since we last read or wrote the file."""
        if self._stat() != self._stamp:
            log.debug("the %s changed on disk; reloading it", self._where())
            self.load_into(cache)

    def save(self, cache: msal.SerializableTokenCache, *, force: bool = False) -> bool:
        """Write the cache back if it changed: temp file + ``os.replace``, mode 0600."""
        if not (force or cache.has_state_changed):
            return False
        directory = self.ensure_directory()
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(cache.serialize())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise self._config_error("write", exc) from None
        _fsync_directory(directory)
        self._stamp = self._stat()
        log.debug("wrote the %s", self._where())
        return True

    def ensure_directory(self) -> Path:
        directory = self.path.parent
        if not directory.is_dir():
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(directory, 0o700)
            except OSError as exc:
                raise self._config_error("create the directory of", exc) from None
        return directory

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock (a ``.lock`` file beside the cache) across processes."""
        if sys.platform == "win32":
            yield
            return
        directory = self.ensure_directory()
        lock_path = directory / f"{self.path.name}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._config_error("lock", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _fsync_directory(directory: Path) -> None:
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- MSAL applications ---------------------------------------------------------------------------


class _IdpHttpClient:
    """The HTTP client MSAL uses: requests, with ``auth.ca_bundle`` applied to every request.

    MSAL's own ``verify=`` sets ``Session.verify``, which requests lets ``REQUESTS_CA_BUNDLE``
    override; passing ``verify`` per request makes a configured CA bundle always win. Like
    MSAL's default client it retries once, but only a connection that was never established
    (so a token request is never sent twice), and quietly (urllib3 would log a warning).
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
        try:
            return self._session.request(method, url, **kwargs)
        except requests.ConnectionError as exc:
            if not _never_connected(exc):
                raise
            log.info("connecting to the identity provider failed (%s); retrying once", exc)
            time.sleep(_RETRY_PAUSE)
            return self._session.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("GET", url, kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("POST", url, kwargs)

    def close(self) -> None:
        self._session.close()


def _never_connected(exc: BaseException) -> bool:
    """Whether a requests error happened before any byte of the request was sent."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(
            current,
            urllib3.exceptions.NewConnectionError
            | urllib3.exceptions.ConnectTimeoutError
            | urllib3.exceptions.NameResolutionError,
        ):
            return True
        reason = getattr(current, "reason", None)
        nested = [*current.args, reason, current.__cause__, current.__context__]
        pending.extend(e for e in nested if isinstance(e, BaseException))
    return False


def _build_app(
    settings: Settings, cache: msal.SerializableTokenCache, *, public: bool
) -> msal.ClientApplication:
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
            return msal.PublicClientApplication(auth.client_id, **common)
        return msal.ConfidentialClientApplication(
            auth.client_id, client_credential=_client_credential(auth), **common
        )
    except requests.RequestException as exc:
        raise _unreachable(auth, exc) from None
    except ValueError as exc:
        raise _discovery_error(auth, exc) from None


def _call(settings: AuthSettings, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call MSAL; a network failure becomes an AuthError naming the identity provider."""
    try:
        return func(*args, **kwargs)
    except requests.RequestException as exc:
        raise _unreachable(settings, exc) from None


def _cached_accounts(cache: msal.SerializableTokenCache) -> list[dict[str, Any]]:
    """Accounts in the cache, read offline (no MSAL application, no network)."""
    return list(cache.search(msal.TokenCache.CredentialType.ACCOUNT))


def _keep_only(app: msal.ClientApplication, result: Mapping[str, Any]) -> None:
    """After a fresh sign-in, forget every other account: one cache, one identity."""
    claims = result.get("id_token_claims") or {}
    oid = claims.get("oid") or claims.get("sub")
    for account in app.get_accounts():
        if oid is not None and account.get("local_account_id") != oid:
            log.info("removing the previous account %s from the token cache", account["username"])
            app.remove_account(account)


def _token_of(result: Mapping[str, Any]) -> Token:
    try:
        expires_in = float(result.get("expires_in", _DEFAULT_EXPIRES_IN))
    except (TypeError, ValueError):
        expires_in = _DEFAULT_EXPIRES_IN
    return Token(str(result["access_token"]), time.time() + expires_in)


class MsalTokenProvider:
    """A :class:`~etl.auth.TokenProvider` for modes ``refresh_token`` and ``device_code``.

    Thread-safe: one lock serializes every token acquisition and cache write in this process;
    the cache file's lock does the same across processes.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._auth = auth = settings.auth
        if auth.mode not in ("refresh_token", "device_code"):
            raise ConfigError(f"auth.mode {auth.mode} does not use MSAL")
        _check_common(auth)
        self._scopes = scopes_of(auth)
        self._public = auth.mode == "device_code"
        if not self._public:
            _client_credential(auth)  # fail now on a missing or broken credential
        self._file = CacheFile(auth.token_cache_path)
        self._cache = self._file.read()
        if not _cached_accounts(self._cache):
            if self._public:
                raise AuthError(
                    f"not signed in: the token cache {self._file.path} holds no account; {_LOGIN}"
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
        self._failure: tuple[float, AuthError | ConfigError] | None = None

    def _application(self) -> msal.ClientApplication:
        if self._app is None:
            self._app = _build_app(self._settings, self._cache, public=self._public)
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
                with self._file.locked():
                    self._file.reload_if_changed(self._cache)
                    try:
                        result = self._acquire(force_refresh)
                    finally:
                        self._file.save(self._cache)
            except (AuthError, ConfigError) as exc:
                self._failure = (time.monotonic(), exc)
                raise
        token = _token_of(result)
        log.debug("access token valid for %.0f s", token.expires_at - time.time())
        return token

    def _acquire(self, force_refresh: bool) -> Mapping[str, Any]:
        auth = self._auth
        app = self._application()
        accounts = _call(auth, app.get_accounts)
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
            result = _call(
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
                    f"{accounts[0]['username']}; {_LOGIN}"
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
                f"not signed in: the token cache {self._file.path} holds no account; {_LOGIN}"
            )
        if auth.refresh_token is None:
            raise ConfigError(
                f"auth.mode refresh_token needs a refresh token: set "
                f"{env_name('auth', 'refresh_token')} (or auth.refresh_token_file)"
            )
        result = _call(
            auth, app.acquire_token_by_refresh_token, auth.refresh_token.reveal(), self._scopes
        )
        if "access_token" not in result:
            # After a failed silent refresh, that first error is the informative one.
            raise AuthError(
                describe_error(failure, auth, "refreshing the access token")
                if failure
                else describe_error(result, auth, "redeeming the refresh token")
            )
        _keep_only(app, result)
        log.info(
            "redeemed the configured refresh token for %s",
            (result.get("id_token_claims") or {}).get("preferred_username", "the account"),
        )
        return dict(result)


def msal_provider(settings: Settings) -> TokenProvider:
    """The token provider for ``auth.mode`` (``access_token`` needs no MSAL)."""
    if settings.auth.mode == "access_token":
        if settings.auth.access_token is None:
            raise ConfigError(
                "auth.mode is access_token but no token is set: set "
                f"{env_name('auth', 'access_token')} (or auth.access_token_file)"
            )
        return StaticTokenProvider(settings.auth.access_token.reveal())
    return MsalTokenProvider(settings)


# -- auth login / status / logout ----------------------------------------------------------------


def login(settings: Settings, echo: Callable[[str], Any]) -> None:
    """``auth login``: device code sign-in (mode device_code), or a first redemption of the
    configured refresh token (mode refresh_token); the new cache replaces the old one."""
    auth = settings.auth
    if auth.mode == "access_token":
        raise ConfigError(
            "auth.mode access_token has no sign-in: it uses the bearer token in "
            f"{env_name('auth', 'access_token')}; set auth.mode to device_code to sign in here"
        )
    _check_common(auth)
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
        app = _build_app(settings, cache, public=False)
        result = _call(
            auth, app.acquire_token_by_refresh_token, auth.refresh_token.reveal(), scopes
        )
        if "access_token" not in result:
            raise AuthError(describe_error(result, auth, "redeeming the refresh token"))
    else:
        app = _build_app(settings, cache, public=True)
        result = _device_flow(app, auth, scopes, echo)
    with store.locked():
        store.save(cache, force=True)
    claims = result.get("id_token_claims") or {}
    who = claims.get("preferred_username") or claims.get("upn") or "the account"
    echo(f"signed in as {who} (tenant {claims.get('tid', auth.tenant_id)})")
    echo(f"token cache: {store.path} (mode 0600)")


def _device_flow(
    app: msal.ClientApplication, auth: AuthSettings, scopes: list[str], echo: Callable[[str], Any]
) -> Mapping[str, Any]:
    flow = _call(auth, app.initiate_device_flow, scopes=scopes)
    if "user_code" not in flow:
        raise AuthError(describe_error(flow, auth, "starting the device code sign-in"))
    minutes = max(1, round(int(flow.get("expires_in", 900)) / 60))
    echo(
        f"To sign in, open {flow['verification_uri']} in a browser and enter the code "
        f"{flow['user_code']}"
    )
    echo(f"waiting for the sign-in (the code expires in {minutes} min; Ctrl-C cancels) ...")
    try:
        result = _call(auth, app.acquire_token_by_device_flow, flow)
    except KeyboardInterrupt:
        raise AuthError(f"sign-in cancelled; {_LOGIN} to try again") from None
    if "access_token" in result:
        return dict(result)
    error = result.get("error")
    if error in ("expired_token", "authorization_pending", "slow_down", "code_expired"):
        raise AuthError(
            f"sign-in failed: the code expired before the sign-in was finished; {_LOGIN} again "
            f"and finish within {minutes} min"
        )
    if error == "authorization_declined":
        raise AuthError(f"sign-in failed: it was declined in the browser; {_LOGIN} again")
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
    accounts = _cached_accounts(cache)
    if not store.path.exists():
        lines.append(f"token cache: {store.path} (not created yet)")
    else:
        mode = store.path.stat().st_mode & 0o777
        lines.append(f"token cache: {store.path} (mode {mode:04o})")
    if not accounts:
        hint = (
            _LOGIN
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
        lines.append("refresh token: " + ("cached" if refresh else f"none cached; {_LOGIN}"))
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
        accounts = _cached_accounts(cache)
        if not accounts:
            return f"nobody is signed in (token cache {store.path})"
        names = sorted({a.get("username") or "(no username)" for a in accounts})
        try:
            _check_common(auth)
            app = _build_app(settings, cache, public=True)
            for account in _call(auth, app.get_accounts):
                app.remove_account(account)
        except (AuthError, ConfigError) as exc:
            log.info("removing the accounts without MSAL (%s)", exc)
        if _cached_accounts(cache):  # MSAL unusable, or accounts of another authority host
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
