"""The ``[auth]`` settings MSAL needs, checked: scopes, authority, client credential.

Every missing or broken setting is a :class:`~etl.errors.ConfigError` naming the key and its
environment variable, raised before any request is made.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from etl.config import AuthSettings, env_name
from etl.errors import ConfigError

log = logging.getLogger(__name__)

RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})


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


def check_common(settings: AuthSettings) -> None:
    """Tenant, client id, an https authority, a readable CA bundle and a usable scope."""
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


def client_credential(settings: AuthSettings) -> str | dict[str, str]:
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


def secrets_of(settings: AuthSettings) -> list[str]:
    """Every configured secret value, to scrub from messages."""
    return [
        s.reveal()
        for s in (settings.client_secret, settings.refresh_token, settings.access_token)
        if s is not None and s.reveal()
    ]
