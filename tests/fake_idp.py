"""A local fake Microsoft Entra ID (v2.0 endpoints) for the authentication tests.

It serves HTTPS on 127.0.0.1 (a free port) from a background thread, with a certificate from a
``trustme`` test CA whose PEM is written to :attr:`FakeIdP.ca_bundle` (use it as
``auth.ca_bundle``). MSAL talks to it unmodified, with instance discovery off:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: OpenID discovery (an unknown tenant
  answers 400 ``AADSTS90002``, as Entra ID does);
- ``POST /{tenant}/oauth2/v2.0/devicecode``: starts a device code flow;
- ``POST /{tenant}/oauth2/v2.0/token``: grants ``refresh_token`` (every redemption ROTATES the
  refresh token: the old one then answers ``invalid_grant`` AADSTS70008) and
  ``urn:ietf:params:oauth:grant-type:device_code`` (``authorization_pending`` for the first
  :attr:`FakeIdP.pending_polls` polls, then tokens). Clients authenticate with the client secret
  or a certificate assertion (a JWT signed with the registered certificate's key, checked here).

Access and refresh tokens are opaque random strings; the id_token is an unsigned JWT with the
claims MSAL needs for the account; ``client_info`` is returned when asked for. Access tokens
that are currently valid are kept in :attr:`FakeIdP.valid_access_tokens`: hand that very set to
the sandbox (``sandbox.faults.accepted_tokens = idp.valid_access_tokens``) and the API accepts
exactly what the identity provider issued. Every request is recorded in :attr:`FakeIdP.requests`.

Outages: :meth:`FakeIdP.fail_next` makes the next requests answer a 5xx (with an HTML body, as a
load balancer would), and :meth:`FakeIdP.go_down` closes the listening socket (connections are
refused) until :meth:`FakeIdP.come_back` listens again on the same port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse

import trustme
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Descriptions as Entra ID words them (first line), for the errors the fake can answer.
DESCRIPTIONS = {
    65001: "The user or administrator has not consented to use the application with ID '{client_id}'.",
    70008: "The provided authorization code or refresh token has expired due to inactivity.",
    700082: "The refresh token has expired due to inactivity. The token was issued on "
    "2024-01-01T00:00:00Z and was inactive for 90.00:00:00.",
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
    50076: "Due to a configuration change made by your administrator, or because you moved to a "
    "new location, you must use multi-factor authentication to access '{resource}'.",
    53003: "Access has been blocked by Conditional Access policies.",
    7000215: "Invalid client secret provided. Ensure the secret being sent in the request is the "
    "client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    7000218: "The request body must contain the following parameter: 'client_assertion' or "
    "'client_secret'.",
    700016: "Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
    700027: "Client assertion failed signature validation.",
    90002: "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.",
    70016: "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
    70020: "The provided authorization code or device code has expired.",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Recorded:
    """One request the fake received (secrets are not kept, only whether they were sent)."""

    method: str
    path: str
    grant_type: str | None = None
    client_id: str | None = None
    scope: str | None = None
    client_info: bool = False
    client_secret_sent: bool = False
    client_assertion_sent: bool = False
    status: int = 0
    error: str | None = None


@dataclass
class _RefreshGrant:
    user: str
    public: bool  # issued to a public client (device code): redeemable without a credential


@dataclass
class _DeviceCode:
    user_code: str
    expires_at: float
    scope: str
    polls: int = 0
    declined: bool = False


@dataclass
class User:
    username: str = "integration@contoso.example"
    name: str = "Integration Account"
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))


class _AnswerError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class FakeIdP:
    """A fake Entra ID tenant with one app registration; use as a context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        tenant_id: str = "11111111-2222-3333-4444-555555555555",
        client_id: str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        client_secret: str | None = None,
        access_token_lifetime: int = 3600,
        pending_polls: int = 1,
        device_code_lifetime: int = 900,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret or "secret-" + secrets.token_urlsafe(24)
        self.access_token_lifetime = access_token_lifetime
        self.pending_polls = pending_polls
        self.device_code_lifetime = device_code_lifetime
        self.user = User()
        self.requests: list[Recorded] = []
        self.valid_access_tokens: set[str] = set()
        self.issued: list[str] = []  # every token value ever handed out (access, refresh, id)
        self.next_token_error: tuple[str, int] | None = None  # (error, AADSTS code), once
        self._failing: list[int] = []  # statuses the next requests answer, one each
        self.certificate: x509.Certificate | None = None
        self._refresh: dict[str, _RefreshGrant] = {}
        self._used_refresh: dict[str, _RefreshGrant] = {}
        self._revoked_refresh: dict[str, _RefreshGrant] = {}
        self._devices: dict[str, _DeviceCode] = {}
        self._lock = threading.Lock()

        self.ca = trustme.CA()
        self.ca_bundle = directory / "fake-idp-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_bundle))
        server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(self._context)
        self._server, self._thread = self._listen(0)
        self.port: int = self._server.server_address[1]
        self.authority_host = f"https://127.0.0.1:{self.port}"

    def _listen(self, port: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        server.daemon_threads = True
        server.socket = self._context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-idp-{server.server_address[1]}",
            daemon=True,
        )
        return server, thread

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeIdP:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def go_down(self) -> None:
        """Stop listening: connections to :attr:`authority_host` are refused."""
        self.stop()

    def come_back(self) -> None:
        """Listen again on the same port (after :meth:`go_down`)."""
        self._server, self._thread = self._listen(self.port)
        self._thread.start()

    def __enter__(self) -> FakeIdP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests arrange -----------------------------------------------------------------------

    def mint_refresh_token(self) -> str:
        """A refresh token as the one-time (Secure Application Model) consent would yield."""
        token = "rt-" + secrets.token_urlsafe(32)
        with self._lock:
            self._refresh[token] = _RefreshGrant(self.user.username, public=False)
            self.issued.append(token)
        return token

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far now answers AADSTS700082 (expired or revoked)."""
        with self._lock:
            self._revoked_refresh.update(self._refresh)
            self._refresh.clear()

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working at the API (the sandbox's view)."""
        with self._lock:
            self.valid_access_tokens.clear()

    def use_certificate(self, directory: Path) -> Path:
        """Register a client certificate; returns a PEM file with its private key and cert."""
        cert = self.ca.issue_cert("referrals-etl-client.example", key_type=trustme.KeyType.RSA)
        path = directory / "client-cert.pem"
        path.write_bytes(cert.private_key_pem.bytes() + cert.cert_chain_pems[0].bytes())
        self.certificate = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
        return path

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next ``count`` requests (any endpoint) answer ``status``: a 5xx with a gateway's
        HTML page, a 429 with ``temporarily_unavailable``."""
        with self._lock:
            self._failing.extend([status] * count)

    def decline_device_codes(self) -> None:
        with self._lock:
            for device in self._devices.values():
                device.declined = True

    def token_requests(self, grant_type: str | None = None) -> list[Recorded]:
        """Requests to the token endpoint, optionally of one grant type."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path.endswith("/oauth2/v2.0/token")
                and (grant_type is None or r.grant_type == grant_type)
            ]

    def live_refresh_tokens(self) -> set[str]:
        with self._lock:
            return set(self._refresh)

    # -- endpoints ------------------------------------------------------------------------------

    def _discovery(self, tenant: str) -> dict[str, Any]:
        if tenant not in (self.tenant_id, "organizations", "common"):
            raise self._error(400, "invalid_tenant", 90002, tenant=tenant)
        base = f"{self.authority_host}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{self.authority_host}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.authority_host}/{self.tenant_id}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }

    def _devicecode(self, tenant: str, form: dict[str, str], rec: Recorded) -> dict[str, Any]:
        self._check_tenant_and_app(tenant, form)
        device_code = "dc-" + secrets.token_urlsafe(24)
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        with self._lock:
            self._devices[device_code] = _DeviceCode(
                user_code, time.time() + self.device_code_lifetime, form.get("scope", "")
            )
        verification_uri = f"{self.authority_host}/devicelogin"
        return {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": verification_uri,
            "expires_in": self.device_code_lifetime,
            "interval": 1,
            "message": f"To sign in, use a web browser to open the page {verification_uri} "
            f"and enter the code {user_code} to authenticate.",
        }

    def _token(self, tenant: str, form: dict[str, str], rec: Recorded) -> dict[str, Any]:
        self._check_tenant_and_app(tenant, form)
        grant = form.get("grant_type")
        scope = form.get("scope", "")
        if grant == "refresh_token":
            old = form.get("refresh_token", "")
            with self._lock:
                record = self._refresh.get(old)
                revoked = old in self._revoked_refresh
                used = old in self._used_refresh
                known = record or self._revoked_refresh.get(old) or self._used_refresh.get(old)
            if known is None or not known.public:
                self._check_client_credential(form, rec)
            self._injected_error()
            if record is None:
                if revoked:
                    raise self._error(400, "invalid_grant", 700082)
                if used:
                    raise self._error(400, "invalid_grant", 70008)
                raise self._error(400, "invalid_grant", 50173)
            with self._lock:
                self._used_refresh[old] = self._refresh.pop(old)  # rotated: the old one is spent
            return self._issue(scope, form, public=record.public)
        if grant == DEVICE_GRANT:
            with self._lock:
                device = self._devices.get(form.get("device_code", ""))
                if device is not None:
                    device.polls += 1
            if device is None:
                raise self._error(400, "invalid_grant", 70000)
            if device.expires_at < time.time():
                raise self._error(400, "expired_token", 70020)
            if device.declined:
                raise self._error(400, "authorization_declined", 70000)
            if device.polls <= self.pending_polls:
                raise self._error(400, "authorization_pending", 70016)
            self._injected_error()
            with self._lock:
                self._devices.pop(form.get("device_code", ""), None)
            return self._issue(device.scope, form, public=True)  # scope of the devicecode call
        raise self._error(400, "unsupported_grant_type", 70003)

    # -- helpers --------------------------------------------------------------------------------

    def _injected_error(self) -> None:
        with self._lock:
            injected, self.next_token_error = self.next_token_error, None
        if injected is not None:
            error, code = injected
            raise self._error(401 if error == "invalid_client" else 400, error, code)

    def _check_tenant_and_app(self, tenant: str, form: dict[str, str]) -> None:
        if tenant != self.tenant_id:
            raise self._error(400, "invalid_request", 90002, tenant=tenant)
        if form.get("client_id") != self.client_id:
            raise self._error(
                400, "unauthorized_client", 700016, client_id=form.get("client_id", "")
            )

    def _check_client_credential(self, form: dict[str, str], rec: Recorded) -> None:
        if "client_assertion" in form:
            if form.get("client_assertion_type") != ASSERTION_TYPE or not self._valid_assertion(
                form["client_assertion"]
            ):
                raise self._error(401, "invalid_client", 700027)
            return
        if "client_secret" not in form:
            raise self._error(401, "invalid_client", 7000218)
        if not secrets.compare_digest(form["client_secret"], self.client_secret):
            raise self._error(401, "invalid_client", 7000215)

    def _valid_assertion(self, assertion: str) -> bool:
        """An RS256 JWT signed by the registered certificate's key, x5t = its SHA-1 thumbprint."""
        if self.certificate is None:
            return False
        try:
            head_b64, body_b64, sig_b64 = assertion.split(".")
            header = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(body_b64))
            thumbprint = b64url(self.certificate.fingerprint(hashes.SHA1()))
            if header.get("alg") != "RS256" or str(header.get("x5t", "")).rstrip("=") != thumbprint:
                return False
            public_key = self.certificate.public_key()
            if not isinstance(public_key, rsa.RSAPublicKey):
                return False
            public_key.verify(
                b64url_decode(sig_b64),
                f"{head_b64}.{body_b64}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature):
            return False
        token_endpoint = f"{self.authority_host}/{self.tenant_id}/oauth2/v2.0/token"
        return bool(
            claims.get("iss") == claims.get("sub") == self.client_id
            and claims.get("aud") == token_endpoint
            and float(claims.get("exp", 0)) > time.time()
        )

    def _issue(self, scope: str, form: dict[str, str], *, public: bool) -> dict[str, Any]:
        now = int(time.time())
        access = "at-" + secrets.token_urlsafe(32)
        refresh = "rt-" + secrets.token_urlsafe(32)
        claims = {
            "aud": self.client_id,
            "iss": f"{self.authority_host}/{self.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": self.user.name,
            "oid": self.user.oid,
            "preferred_username": self.user.username,
            "sub": b64url(hashlib.sha256(self.user.oid.encode()).digest()),
            "tid": self.tenant_id,
            "ver": "2.0",
        }
        id_token = ".".join(
            [
                b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
                b64url(json.dumps(claims).encode()),
                "",
            ]
        )
        granted = " ".join(
            s for s in scope.split() if s not in {"openid", "profile", "offline_access"}
        )
        with self._lock:
            self.valid_access_tokens.add(access)
            self._refresh[refresh] = _RefreshGrant(self.user.username, public=public)
            self.issued.extend([access, refresh, id_token])
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": granted,
            "expires_in": self.access_token_lifetime,
            "ext_expires_in": self.access_token_lifetime,
            "access_token": access,
            "refresh_token": refresh,
            "id_token": id_token,
        }
        if form.get("client_info") == "1":
            body["client_info"] = b64url(
                json.dumps({"uid": self.user.oid, "utid": self.tenant_id}).encode()
            )
        return body

    def _error(self, status: int, error: str, code: int, **values: str) -> _AnswerError:
        values.setdefault("client_id", self.client_id)
        values.setdefault("tenant", self.tenant_id)
        values.setdefault("resource", "https://api.partner.microsoft.com")
        text = DESCRIPTIONS.get(code, "Something went wrong.").format(**values)
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        return _AnswerError(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: 2025-01-01 00:00:00Z",
                "error_codes": [code],
                "timestamp": "2025-01-01 00:00:00Z",
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"{self.authority_host}/error?code={code}",
            },
        )

    def _handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        path = urlparse(raw_path).path
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8")).items()}
        rec = Recorded(
            method,
            path,
            grant_type=form.get("grant_type"),
            client_id=form.get("client_id"),
            scope=form.get("scope"),
            client_info=form.get("client_info") == "1",
            client_secret_sent="client_secret" in form,
            client_assertion_sent="client_assertion" in form,
        )
        with self._lock:
            self.requests.append(rec)
            failing = self._failing.pop(0) if self._failing else None
        if failing is not None:
            rec.status = failing
            return failing, {"error": "temporarily_unavailable"}  # the body of a 429
        parts = path.strip("/").split("/")
        try:
            if method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                status, answer = 200, self._discovery(parts[0])
            elif method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
                status, answer = 200, self._token(parts[0], form, rec)
            elif method == "POST" and parts[1:] == ["oauth2", "v2.0", "devicecode"]:
                status, answer = 200, self._devicecode(parts[0], form, rec)
            else:
                status, answer = 404, {"error": "not_found", "error_description": path}
        except _AnswerError as exc:
            status, answer = exc.status, exc.body
        rec.status = status
        rec.error = answer.get("error")
        return status, answer


def _handler_for(idp: FakeIdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            status, answer = idp._handle(method, self.path, body)
            if status >= 500:  # an outage: a gateway's HTML page, not the IdP's JSON
                phrase = HTTPStatus(status).phrase
                data = f"<html><body><h1>{status} {phrase}</h1></body></html>".encode()
                content_type = "text/html"
            else:
                data = json.dumps(answer).encode("utf-8")
                content_type = "application/json; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests assert on what the job prints."""

    return Handler
