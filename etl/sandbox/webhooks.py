"""The sandbox as Partner Center's webhook sender: signed callbacks for the changes it makes.

:class:`CertificateServer` serves certificates over HTTPS (its TLS certificate is issued by the
sandbox's test CA) at ``https://127.0.0.1:PORT/cert/<name>.cer``, counting every download.
:class:`WebhookSender` watches the sandbox's event log and POSTs each new event to a receiver,
signed as Partner Center signs (``Authorization: Signature``, ``x-ms-certificate-url``,
``x-ms-signature-algorithm: rsa-sha256``), trying each delivery up to 10 times like Partner
Center. Both run in daemon threads and stop within a second of :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn

from etl.sandbox.server import UvicornThread
from etl.sandbox.signing import TestAuthority

if TYPE_CHECKING:
    from etl.sandbox.state import SandboxState

CERTIFICATE_NAME = "pcnotifications-dispatch.microsoft.com.cer"
DELIVERY_ATTEMPTS = 10


def signed_headers(
    body: bytes,  # noqa: ARG001 - names what the signature covers; the headers do not repeat it
    signature: str,
    certificate_url: str,
) -> dict[str, str]:
    """The headers Partner Center sends with a callback whose body is ``body``."""
    return {
        "content-type": "application/json",
        "authorization": f"Signature {signature}",
        "x-ms-certificate-url": certificate_url,
        "x-ms-signature-algorithm": "rsa-sha256",
    }


class CertificateServer:
    """HTTPS on 127.0.0.1 serving ``certificates[name]`` (DER) at ``/cert/<name>``."""

    def __init__(self, authority: TestAuthority, port: int = 0) -> None:
        self.authority = authority
        self.certificates: dict[str, bytes] = {CERTIFICATE_NAME: authority.signing.der()}
        self.downloads: Counter[str] = Counter()
        self._dir = tempfile.TemporaryDirectory(prefix="sandbox-tls-")
        cert_file, key_file = Path(self._dir.name, "tls.pem"), Path(self._dir.name, "tls.key")
        cert_file.write_bytes(authority.tls.pem())
        key_file.write_bytes(authority.tls.key_pem())
        key_file.chmod(0o600)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            ssl_certfile=str(cert_file),
            ssl_keyfile=str(key_file),
        )
        self._runner = UvicornThread(config, self._socket, f"sandbox-certs-{self.port}")

    def url(self, name: str = CERTIFICATE_NAME) -> str:
        return f"https://{self.host}/cert/{name}"

    async def _app(
        self,
        scope: MutableMapping[str, Any],
        receive: Any,  # noqa: ARG002 - the ASGI signature; callbacks carry no request body to read
        send: Any,
    ) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        name = path.removeprefix("/cert/")
        self.downloads[name] += 1
        body = self.certificates.get(name) if path.startswith("/cert/") else None
        status = 200 if body is not None else 404
        body = body or b"not found"
        headers = [
            (b"content-type", b"application/pkix-cert" if status == 200 else b"text/plain"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def start(self, timeout: float = 10.0) -> None:
        self._runner.start(f"certificate server on {self.host}", timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._runner.stop(timeout)
        self._dir.cleanup()

    def __enter__(self) -> CertificateServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event's delivery: the final HTTP status (0 = never answered) and the attempts."""

    event: dict[str, Any]
    status: int
    attempts: int
    sent_at: float  # time.time() of the first attempt
    seconds: float  # from the first attempt to the final answer


class WebhookSender:
    """Sends every event the sandbox records from now on to ``url``, signed.

    ``certificate_url`` is what the callbacks name in ``x-ms-certificate-url``.
    ``deliveries`` lists the results, in the order they finished.
    """

    def __init__(
        self,
        sandbox: SandboxState,
        url: str,
        authority: TestAuthority,
        certificate_url: str,
        *,
        concurrency: int = 8,
        poll_seconds: float = 0.02,
        retry_seconds: float = 0.5,
    ) -> None:
        self.sandbox = sandbox
        self.url = url
        self.authority = authority
        self.certificate_url = certificate_url
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.deliveries: list[Delivery] = []
        self._seen = sandbox.event_seq
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> WebhookSender:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        limit = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            while not self._stop.is_set():
                seq = self.sandbox.event_seq
                if seq > self._seen:
                    for event in self.sandbox.events(self._seen)[: seq - self._seen]:
                        task = asyncio.create_task(self._deliver(client, limit, event))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    self._seen = seq
                await asyncio.sleep(self.poll_seconds)
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(
        self, client: httpx.AsyncClient, limit: asyncio.Semaphore, event: dict[str, Any]
    ) -> None:
        body = json.dumps(event).encode()
        headers = signed_headers(body, self.authority.sign(body), self.certificate_url)
        sent_at, started = time.time(), time.perf_counter()
        status, attempts = 0, 0
        async with limit:
            while attempts < DELIVERY_ATTEMPTS and not self._stop.is_set():
                attempts += 1
                try:
                    response = await client.post(self.url, content=body, headers=headers)
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                if 200 <= status < 300 or 400 <= status < 500:
                    break  # delivered, or refused for good
                await asyncio.sleep(self.retry_seconds * attempts)
        self.deliveries.append(
            Delivery(event, status, attempts, sent_at, time.perf_counter() - started)
        )
