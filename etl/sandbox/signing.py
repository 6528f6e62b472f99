"""The sandbox's own test CA, and Partner Center-shaped signatures made with it.

:class:`TestAuthority` makes, in memory, a root CA, a signing certificate issued by it (subject
``O=Microsoft Corporation`` by default, as Partner Center's), and a TLS server certificate for
``127.0.0.1``/``localhost`` so the signing certificate can be served over HTTPS
(:class:`etl.sandbox.webhooks.CertificateServer`). A receiver that trusts :meth:`ca_pem`
(``webhook.ca_bundle``) accepts callbacks signed by :meth:`sign`; nothing else does.
:func:`issue` also makes the wrong certificates tests need (another organization, expired,
self-signed).
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

MICROSOFT = "Microsoft Corporation"
SIGNING_NAME = "pcnotifications-dispatch.microsoft.com"


@dataclass(frozen=True)
class Issued:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, body: bytes) -> str:
        """Base64 RSA PKCS#1 v1.5 SHA-256 signature of ``body``, as Partner Center sends it."""
        raw = self.key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode("ascii")


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, organization: str | None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def make_ca(
    common_name: str = "Referrals sandbox test root",
    organization: str = "Sandbox",
    issuer: Issued | None = None,
) -> Issued:
    """A CA valid from yesterday for ten years: a self-signed root, or an intermediate CA
    issued by ``issuer``."""
    key = _key()
    name = _name(common_name, organization)
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    signer = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    return Issued(key, builder.sign(signer, hashes.SHA256()))


def issue(
    issuer: Issued | None,
    common_name: str = SIGNING_NAME,
    organization: str | None = MICROSOFT,
    *,
    server_names: tuple[str, ...] = (),
    valid_days: tuple[float, float] = (-1, 365),
    ca_issuers_url: str | None = None,
) -> Issued:
    """A leaf certificate signed by ``issuer`` (``None``: self-signed).

    ``server_names`` (DNS names or IP addresses) makes it a TLS server certificate;
    ``valid_days`` is (not before, not after) in days from now: ``(-10, -1)`` is expired;
    ``ca_issuers_url`` names where its issuer's certificate is (Authority Information Access).
    """
    key = _key()
    subject = _name(common_name, organization)
    signer_key = issuer.key if issuer is not None else key
    issuer_name = issuer.certificate.subject if issuer is not None else subject
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=valid_days[0]))
        .not_valid_after(now + timedelta(days=valid_days[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    if ca_issuers_url is not None:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(ca_issuers_url),
                    )
                ]
            ),
            critical=False,
        )
    if server_names:
        alternatives: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternatives), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False
        )
    return Issued(key, builder.sign(signer_key, hashes.SHA256()))


class TestAuthority:
    """A root CA, a Partner Center-like signing certificate and a localhost TLS certificate."""

    __test__ = False  # not a pytest test class

    def __init__(self, organization: str = MICROSOFT) -> None:
        self.root = make_ca()
        self.signing = issue(self.root, SIGNING_NAME, organization)
        self.tls = issue(self.root, "localhost", "Sandbox", server_names=("127.0.0.1", "localhost"))

    def ca_pem(self) -> bytes:
        """The root, for ``webhook.ca_bundle``."""
        return self.root.pem()

    def sign(self, body: bytes) -> str:
        return self.signing.sign(body)
