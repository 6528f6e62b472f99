"""Is this callback really from Partner Center? Checked before its body is even parsed.

In order, each failure a :class:`RejectedCallback` (4xx) and nothing downloaded after it:

1. a signature (``Authorization: Signature <base64>`` or ``x-ms-signature``) and the algorithm
   ``rsa-sha256``;
2. ``x-ms-certificate-url`` is ``https`` and its host (with the port, if any) is in
   ``webhook.certificate_hosts``: any other URL is refused WITHOUT a download;
3. the certificate, downloaded over TLS verified against ``webhook.ca_bundle`` (at most
   64 KiB, no redirects, a deadline), chains to a root of that bundle (or the system's trust
   store) at the current time: ``cryptography.x509.verification``, so an expired, self-signed
   or foreign certificate fails. The download holds the leaf only; an issuing CA that is not
   in the bundle is fetched from the leaf's Authority Information Access (as browsers do), and
   is itself only accepted if it chains to a trusted root;
4. its subject's organization is ``webhook.certificate_organization``;
5. the RSA PKCS#1 v1.5 / SHA-256 signature over the raw body bytes verifies with its key.

Certificates that passed 2-4 are cached by URL (at most :data:`CACHE_SIZE`, each for at most
:data:`CACHE_SECONDS` and never past its own expiry); concurrent callbacks naming one URL wait
for a single download.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from etl.config import WebhookSettings
from etl.errors import ConfigError
from etl.webhooks.events import RejectedCallback

log = logging.getLogger(__name__)

CACHE_SIZE = 16
CACHE_SECONDS = 3600.0
MAX_CERTIFICATE_BYTES = 64 * 1024
DOWNLOAD_TIMEOUT_SECONDS = 10.0
ALGORITHM = "rsa-sha256"
AIA_DEPTH = 2  # issuing CAs fetched from a certificate's Authority Information Access


@dataclass(frozen=True, slots=True)
class _Trusted:
    key: rsa.RSAPublicKey
    until: float  # in the verifier's clock (Unix seconds): trusted until then


def load_trust(ca_bundle: str) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(roots, intermediates) from a PEM bundle, or the system's roots when ``ca_bundle`` is ''.

    A self-issued certificate in the bundle is a root; any other is offered as an intermediate
    (a signing certificate whose download does not include its issuing CA can still chain).
    """
    path = ca_bundle or _system_bundle()
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"webhook.ca_bundle {path}: cannot read it ({exc.strerror})") from None
    except ValueError:
        raise ConfigError(f"webhook.ca_bundle {path}: not a PEM file of certificates") from None
    roots = [c for c in certificates if c.issuer == c.subject]
    others = [c for c in certificates if c.issuer != c.subject]
    if not roots:
        raise ConfigError(f"webhook.ca_bundle {path}: holds no root (self-issued) certificate")
    return roots, others


def _system_bundle() -> str:
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).is_file():
        return cafile
    import certifi

    return str(certifi.where())


def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle or None)


class CallbackVerifier:
    """Verifies callbacks for one receiver; ``await verify(headers, body)`` or it raises."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        on_download: Callable[[], object] = lambda: None,
    ) -> None:
        self._hosts = frozenset(settings.certificate_host_list())
        self._organization = settings.certificate_organization
        roots, self._intermediates = load_trust(settings.ca_bundle)
        self._store = Store(roots)
        self._clock = clock
        self._cache: OrderedDict[str, _Trusted] = OrderedDict()
        self._pending: dict[str, asyncio.Future[_Trusted]] = {}
        self.downloads = 0
        self._on_download = on_download
        self._client = httpx.AsyncClient(
            transport=transport,
            verify=_tls_context(settings.ca_bundle) if transport is None else True,
            timeout=DOWNLOAD_TIMEOUT_SECONDS,
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        signature = _signature(headers)
        algorithm = headers.get("x-ms-signature-algorithm", "").strip().lower()
        if algorithm != ALGORITHM:
            raise RejectedCallback(
                401, "bad_algorithm", f"x-ms-signature-algorithm must be {ALGORITHM}"
            )
        url = headers.get("x-ms-certificate-url", "").strip()
        self._check_url(url)
        trusted = await self._trusted(url)
        try:
            trusted.key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise RejectedCallback(
                401, "bad_signature", "the signature does not verify with the certificate"
            ) from None

    # -- the certificate URL -------------------------------------------------------------------

    def _check_url(self, url: str) -> None:
        if not url:
            raise RejectedCallback(401, "no_certificate_url", "x-ms-certificate-url is missing")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise RejectedCallback(
                401, "no_certificate_url", "x-ms-certificate-url is not a URL"
            ) from None
        host = (parts.hostname or "").lower()
        where = f"{host}:{port}" if port is not None else host
        if parts.scheme != "https" or parts.username or parts.password or not host:
            raise RejectedCallback(
                403, "certificate_host_not_allowed", "the certificate URL is not a plain https URL"
            )
        if where not in self._hosts:
            raise RejectedCallback(
                403,
                "certificate_host_not_allowed",
                f"certificate host {where[:100]!r} is not in webhook.certificate_hosts",
            )

    # -- download, chain, organization (cached) ------------------------------------------------

    async def _trusted(self, url: str) -> _Trusted:
        now = self._clock()
        cached = self._cache.get(url)
        if cached is not None and cached.until > now:
            self._cache.move_to_end(url)
            return cached
        pending = self._pending.get(url)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Trusted] = asyncio.get_running_loop().create_future()
        self._pending[url] = future
        try:
            trusted = await self._fetch_and_check(url)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._pending[url]
        future.set_result(trusted)
        self._cache[url] = trusted
        self._cache.move_to_end(url)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return trusted

    async def _fetch_and_check(self, url: str) -> _Trusted:
        data = await self._download(url)
        try:
            certificates = (
                x509.load_pem_x509_certificates(data)
                if data.lstrip().startswith(b"-----BEGIN")
                else [x509.load_der_x509_certificate(data)]
            )
        except ValueError:
            raise RejectedCallback(
                401, "bad_certificate", "the certificate URL does not hold a certificate"
            ) from None
        leaf, *chain = certificates
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC)
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(at)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, [*chain, *self._intermediates])
        except VerificationError as exc:
            # The download holds the leaf only; its issuing CA may be named in it (AIA).
            issuers = await self._issuers(leaf)
            try:
                if not issuers:
                    raise exc
                verifier.verify(leaf, [*chain, *self._intermediates, *issuers])
            except VerificationError as final:
                raise RejectedCallback(
                    401,
                    "untrusted_certificate",
                    "the signing certificate does not chain to a trusted root: " + str(final)[:200],
                ) from None
        organizations = [
            str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ]
        if self._organization not in organizations:
            raise RejectedCallback(
                403,
                "wrong_organization",
                f"the signing certificate's organization is {organizations[:1]!r}, "
                f"not {self._organization!r}",
            )
        key = leaf.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise RejectedCallback(401, "bad_certificate", "the signing key is not an RSA key")
        expires = leaf.not_valid_after_utc.timestamp()
        return _Trusted(key, min(now + CACHE_SECONDS, expires))

    async def _issuers(self, leaf: x509.Certificate) -> list[x509.Certificate]:
        """Issuing CA certificates named by ``leaf``'s Authority Information Access, up to
        :data:`AIA_DEPTH` levels. Only for a certificate already downloaded from an allowed
        host; what they give is still checked against the trusted roots, never trusted."""
        found: list[x509.Certificate] = []
        current = leaf
        for _ in range(AIA_DEPTH):
            urls = _ca_issuer_urls(current)
            if not urls:
                break
            data = await self._download(urls[0])
            try:
                issuer = (
                    x509.load_pem_x509_certificate(data)
                    if data.lstrip().startswith(b"-----BEGIN")
                    else x509.load_der_x509_certificate(data)
                )
            except ValueError:
                break
            found.append(issuer)
            if issuer.issuer == issuer.subject:
                break
            current = issuer
        return found

    async def _download(self, url: str) -> bytes:
        self.downloads += 1
        self._on_download()
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise RejectedCallback(
                        401,
                        "certificate_unavailable",
                        f"the certificate URL answered {response.status_code}",
                    )
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_CERTIFICATE_BYTES:
                        raise RejectedCallback(
                            401, "bad_certificate", "the certificate download is too large"
                        )
                return bytes(data)
        except httpx.HTTPError as exc:
            # Our side could not check it (network, TLS): 503, so Partner Center delivers again.
            raise RejectedCallback(
                503,
                "certificate_download_failed",
                f"could not download the signing certificate: {exc.__class__.__name__}",
            ) from None


def _ca_issuer_urls(certificate: x509.Certificate) -> list[str]:
    try:
        access = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess
        ).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(d.access_location.value)
        for d in access
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and str(d.access_location.value).startswith(("http://", "https://"))
    ]


def _signature(headers: Mapping[str, str]) -> bytes:
    value = headers.get("authorization") or headers.get("x-ms-signature") or ""
    scheme, _, rest = value.strip().partition(" ")
    encoded = rest.strip() if scheme.lower() == "signature" else value.strip()
    if not encoded:
        raise RejectedCallback(401, "missing_signature", "the callback carries no signature")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RejectedCallback(401, "bad_signature", "the signature is not base64") from None
